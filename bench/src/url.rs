//! The broker URL, parsed once for the clients that want its parts (amqprs, the raw connection).

use std::fmt;

/// `amqp://user:password@host:port/vhost`, with percent-decoding of each part.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    /// The URL as given (lapin and warren take it whole).
    pub raw: String,
    /// Host name or address.
    pub host: String,
    /// TCP port (5672 by default).
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Virtual host (`/` when the path is empty).
    pub vhost: String,
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "amqp://{}:***@{}:{}/{}",
            self.user, self.host, self.port, self.vhost
        )
    }
}

impl AmqpUrl {
    /// Parses a plain `amqp://` URL; `amqps` is refused (the benchmark measures plain TCP).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("amqp://")
            .ok_or_else(|| format!("{url:?}: only amqp:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let path = path.map(|p| p.split('?').next().unwrap_or(""));
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(info) => match info.find(':') {
                Some(i) => (decode(&info[..i])?, decode(&info[i + 1..])?),
                None => (decode(info)?, String::new()),
            },
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = match hostport.rfind(':') {
            Some(i) if !hostport.ends_with(']') => (
                &hostport[..i],
                hostport[i + 1..]
                    .parse()
                    .map_err(|_| format!("{url:?}: bad port"))?,
            ),
            _ => (hostport, 5672),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.is_empty() { "localhost" } else { host };
        let vhost = match path {
            None | Some("") => "/".to_owned(),
            Some(p) => decode(p)?,
        };
        Ok(Self {
            raw: url.to_owned(),
            host: host.to_owned(),
            port,
            user,
            password,
            vhost,
        })
    }
}

fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}
