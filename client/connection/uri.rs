//! PLACEHOLDER written by the lead so the crate compiles; helper-4 replaces this file.
#![allow(missing_docs, dead_code)]
use super::options::ConnectionOptions;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriError {
    Invalid,
}
impl std::fmt::Display for UriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid")
    }
}
impl std::error::Error for UriError {}
pub(crate) fn parse(uri: &str) -> Result<ConnectionOptions, crate::Error> {
    let rest = uri
        .strip_prefix("amqp://")
        .ok_or(crate::Error::Uri(UriError::Invalid))?;
    let (auth, rest) = rest.split_once('@').unwrap_or(("guest:guest", rest));
    let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
    let (hostport, vhost) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = hostport
        .split_once(':')
        .map(|(h, p)| (h, p.parse().unwrap_or(5672)))
        .unwrap_or((hostport, 5672));
    let vhost = if vhost.is_empty() || vhost == "%2f" || vhost == "%2F" {
        "/".to_owned()
    } else {
        vhost.to_owned()
    };
    Ok(ConnectionOptions::default()
        .host(host)
        .port(port)
        .username(user)
        .password(pass)
        .vhost(vhost))
}
pub(crate) fn encode_component(s: &str) -> String {
    s.replace('/', "%2F")
}
