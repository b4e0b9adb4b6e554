//! A small line diff, for `--check` and the snapshot tests: which lines differ between a
//! checked-in file and the freshly generated one, as unified-diff hunks.

/// One line of an edit script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Same(usize, usize),
    Removed(usize),
    Added(usize),
}

/// The largest number of changed lines the exact diff is computed for; past it the changed
/// region is shown as removed and re-added whole (memory grows with its square).
const MAX_EDITS: usize = 2000;

/// An edit script from `a` to `b`: the common prefix and suffix kept, the middle diffed with
/// Myers' O(ND) algorithm (shortest script), or replaced whole when it needs more than
/// [`MAX_EDITS`] changes.
fn edits(a: &[&str], b: &[&str]) -> Vec<Edit> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut out: Vec<Edit> = (0..prefix).map(|i| Edit::Same(i, i)).collect();
    match myers(am, bm, MAX_EDITS) {
        Some(middle) => out.extend(middle.into_iter().map(|e| match e {
            Edit::Same(x, y) => Edit::Same(x + prefix, y + prefix),
            Edit::Removed(x) => Edit::Removed(x + prefix),
            Edit::Added(y) => Edit::Added(y + prefix),
        })),
        None => {
            out.extend((0..am.len()).map(|x| Edit::Removed(x + prefix)));
            out.extend((0..bm.len()).map(|y| Edit::Added(y + prefix)));
        }
    }
    let (sa, sb) = (a.len() - suffix, b.len() - suffix);
    out.extend((0..suffix).map(|i| Edit::Same(sa + i, sb + i)));
    out
}

/// Myers' shortest edit script, or `None` if it has more than `max_d` changes.
fn myers(a: &[&str], b: &[&str], max_d: usize) -> Option<Vec<Edit>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    // v[k] for diagonals k in -d..=d, stored at k + d; one snapshot per d for the walk back.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut v: Vec<isize> = vec![0; 1];
    let mut found = false;
    for d in 0..=(max_d as isize).min(n + m) {
        let get = |v: &Vec<isize>, k: isize| -> isize {
            // v holds diagonals -(d-1)..=(d-1) at k + d - 1.
            let i = k + d - 1;
            if i < 0 || i as usize >= v.len() {
                -1
            } else {
                v[i as usize]
            }
        };
        let mut next = vec![0isize; (2 * d + 1) as usize];
        for k in (-d..=d).step_by(2) {
            let mut x = if d == 0 {
                0
            } else if k == -d || (k != d && get(&v, k - 1) < get(&v, k + 1)) {
                get(&v, k + 1)
            } else {
                get(&v, k - 1) + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            next[(k + d) as usize] = x;
            if x >= n && y >= m {
                found = true;
            }
        }
        trace.push(next.clone());
        v = next;
        if found {
            break;
        }
    }
    if !found {
        return None;
    }
    let mut out = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (0..trace.len() as isize).rev() {
        let k = x - y;
        if d == 0 {
            while x > 0 && y > 0 {
                x -= 1;
                y -= 1;
                out.push(Edit::Same(x as usize, y as usize));
            }
            break;
        }
        let prev = &trace[(d - 1) as usize];
        let get = |k: isize| -> isize {
            let i = k + d - 1;
            if i < 0 || i as usize >= prev.len() {
                -1
            } else {
                prev[i as usize]
            }
        };
        let prev_k = if k == -d || (k != d && get(k - 1) < get(k + 1)) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = get(prev_k);
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            x -= 1;
            y -= 1;
            out.push(Edit::Same(x as usize, y as usize));
        }
        if x == prev_x {
            out.push(Edit::Added(prev_y as usize));
        } else {
            out.push(Edit::Removed(prev_x as usize));
        }
        x = prev_x;
        y = prev_y;
    }
    out.reverse();
    Some(out)
}

/// A unified diff of `old` (named `old_name`) against `new` (named `new_name`), with three
/// lines of context, at most `max_lines` lines of hunks; `None` when they are equal.
///
/// The first line summarises: how many lines were removed and added.
///
/// ```
/// let diff = warren_codegen::diff::unified("a\nb\nc\n", "a\nB\nc\n", "old.rs", "new.rs", 100).unwrap();
/// assert!(diff.contains("-b\n+B"));
/// assert!(warren_codegen::diff::unified("same\n", "same\n", "a", "b", 100).is_none());
/// ```
pub fn unified(
    old: &str,
    new: &str,
    old_name: &str,
    new_name: &str,
    max_lines: usize,
) -> Option<String> {
    if old == new {
        return None;
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let script = edits(&a, &b);
    let removed = script
        .iter()
        .filter(|e| matches!(e, Edit::Removed(_)))
        .count();
    let added = script
        .iter()
        .filter(|e| matches!(e, Edit::Added(_)))
        .count();
    let mut out =
        format!("{removed} line(s) removed, {added} added\n--- {old_name}\n+++ {new_name}\n");
    if removed == 0 && added == 0 {
        out.push_str("(the files differ only in line endings or a final newline)\n");
        return Some(out);
    }

    const CONTEXT: usize = 3;
    let changed: Vec<usize> = script
        .iter()
        .enumerate()
        .filter(|(_, e)| !matches!(e, Edit::Same(..)))
        .map(|(i, _)| i)
        .collect();
    // Group changes into hunks whose context windows touch.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &i in &changed {
        let start = i.saturating_sub(CONTEXT);
        let end = (i + CONTEXT + 1).min(script.len());
        match hunks.last_mut() {
            Some((_, e)) if start <= *e => *e = end,
            _ => hunks.push((start, end)),
        }
    }
    let mut lines = 0;
    for (start, end) in hunks {
        if lines >= max_lines {
            out.push_str("... (more differences)\n");
            break;
        }
        let (a_start, b_start) = script[start..end]
            .iter()
            .find_map(|e| match *e {
                Edit::Same(x, y) => Some((x, y)),
                _ => None,
            })
            .unwrap_or((0, 0));
        out.push_str(&format!("@@ -{} +{} @@\n", a_start + 1, b_start + 1));
        for e in &script[start..end] {
            let line = match *e {
                Edit::Same(x, _) => format!(" {}", a[x]),
                Edit::Removed(x) => format!("-{}", a[x]),
                Edit::Added(y) => format!("+{}", b[y]),
            };
            out.push_str(&line);
            out.push('\n');
            lines += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(a: &[&str], b: &[&str], script: &[Edit]) -> Vec<String> {
        let mut out = Vec::new();
        for e in script {
            match *e {
                Edit::Same(x, _) => out.push(a[x].to_owned()),
                Edit::Added(y) => out.push(b[y].to_owned()),
                Edit::Removed(_) => {}
            }
        }
        out
    }

    #[test]
    fn edit_scripts_rebuild_the_new_text() {
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&["a"], &[]),
            (&[], &["a"]),
            (&["a", "b", "c"], &["a", "c"]),
            (
                &["a", "b", "c", "a", "b", "b", "a"],
                &["c", "b", "a", "b", "a", "c"],
            ),
            (&["x"; 5], &["x", "y", "x"]),
            (&["a", "b"], &["c", "d"]),
        ];
        for (a, b) in cases {
            let script = edits(a, b);
            assert_eq!(apply(a, b, &script), b.to_vec(), "{a:?} -> {b:?}");
            let changes = script
                .iter()
                .filter(|e| !matches!(e, Edit::Same(..)))
                .count();
            // Myers finds a shortest script: never more changes than replacing everything.
            assert!(changes <= a.len() + b.len());
        }
        // Shortest: one change for one inserted line in the middle.
        let script = edits(&["a", "b", "c"], &["a", "x", "b", "c"]);
        assert_eq!(
            script
                .iter()
                .filter(|e| !matches!(e, Edit::Same(..)))
                .count(),
            1
        );
    }

    #[test]
    fn huge_differences_fall_back_to_replacing_the_middle() {
        let a: Vec<String> = (0..3000).map(|i| format!("a{i}")).collect();
        let b: Vec<String> = (0..3000).map(|i| format!("b{i}")).collect();
        let (a, b): (Vec<&str>, Vec<&str>) = (
            a.iter().map(String::as_str).collect(),
            b.iter().map(String::as_str).collect(),
        );
        let script = edits(&a, &b);
        assert_eq!(
            apply(&a, &b, &script),
            b.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn unified_shows_hunks_with_context() {
        let old = (1..=20).map(|i| format!("{i}\n")).collect::<String>();
        let new = old.replace("10\n", "ten\n");
        let diff = unified(&old, &new, "old", "new", 100).unwrap();
        assert!(diff.starts_with("1 line(s) removed, 1 added\n--- old\n+++ new\n@@ -7 +7 @@\n"));
        assert!(diff.contains(" 9\n-10\n+ten\n 11\n"));
        assert!(!diff.contains(" 5\n"));
    }

    #[test]
    fn output_is_capped() {
        let old = (1..=200)
            .map(|i| format!("{i}\n\n\n\n\n\n\n\n"))
            .collect::<String>();
        let new = old.replace('1', "one");
        let diff = unified(&old, &new, "a", "b", 20).unwrap();
        assert!(diff.ends_with("... (more differences)\n"));
        assert!(diff.lines().count() < 60);
    }
}
