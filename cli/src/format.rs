//! Output helpers in podman's style: tables, human sizes and durations, RFC 3339 times,
//! JSON with podman's indentation, and a small subset of Go templates (`{{.Field}}`).

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

/// Writes rows as podman's tabwriter does (minimum cell width 12, padding 2; the last
/// column is not padded).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let w = (widths[i] + 2).max(12);
                line.extend(std::iter::repeat_n(' ', w - c.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A size in SI units with 3 significant digits, as podman prints it (`5.59 MB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    // %.3g: round to 3 significant digits; stepping up a unit if that rounds to 1000.
    let mut s = sig3(v);
    if s == "1000" && i + 1 < UNITS.len() {
        i += 1;
        s = "1".to_owned();
    }
    format!("{s} {}", UNITS[i])
}

fn sig3(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// A duration as podman words it (`About an hour`, `3 days`), from seconds.
pub fn human_duration(secs: u64) -> String {
    let hours_rounded = (secs as f64 / 3600.0 + 0.5) as u64;
    match secs {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".to_owned(),
        120..=3599 => format!("{} minutes", secs / 60),
        _ if hours_rounded == 1 => "About an hour".to_owned(),
        _ if hours_rounded < 48 => format!("{hours_rounded} hours"),
        _ if hours_rounded < 24 * 7 * 2 => format!("{} days", hours_rounded / 24),
        _ if hours_rounded < 24 * 30 * 2 => format!("{} weeks", hours_rounded / 24 / 7),
        _ if hours_rounded < 24 * 365 * 2 => format!("{} months", hours_rounded / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// `<duration> ago` for a Unix time, relative to now.
pub fn ago(unix: i64) -> String {
    let d = (now() - unix).max(0) as u64;
    format!("{} ago", human_duration(d))
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A Unix time as RFC 3339 in UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Parses an RFC 3339 time (fractions ignored) into a Unix time.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let oh: i64 = r.get(1..3)?.parse().ok()?;
            let om: i64 = r.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if r.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// JSON with podman's 5-space indentation, plus a newline.
pub fn json_pretty<T: Serialize>(v: &T) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"     ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser)?;
    out.push(b'\n');
    Ok(String::from_utf8(out)?)
}

/// Renders a Go-template subset: `{{.A.B}}` looks a field up (strings print raw, other
/// values as JSON, missing ones as `<no value>`), `{{json .A}}` prints JSON, `{{json .}}`
/// the whole value. `\t` and `\n` escapes become tabs and newlines.
pub fn template(tpl: &str, v: &Value) -> anyhow::Result<String> {
    let tpl = tpl.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = tpl.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| anyhow::anyhow!("template {tpl:?}: unclosed action"))?;
        let action = after[..end].trim();
        let (as_json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let path =
            path.strip_prefix('.').ok_or_else(|| anyhow::anyhow!("template {tpl:?}: unsupported action {action:?}"))?;
        let mut cur = Some(v);
        for field in path.split('.').filter(|f| !f.is_empty()) {
            cur = cur.and_then(|c| c.get(field));
        }
        match cur {
            None => out.push_str("<no value>"),
            Some(Value::String(s)) if !as_json => out.push_str(s),
            Some(Value::Null) if !as_json => out.push_str("<no value>"),
            Some(x) => out.push_str(&serde_json::to_string(x)?),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Writes to stdout, treating a closed pipe as success (as `podman images | head` does).
pub fn print(s: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|()| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1000), "1 kB");
        assert_eq!(human_size(1234), "1.23 kB");
        assert_eq!(human_size(5_590_000), "5.59 MB");
        assert_eq!(human_size(80_300_000), "80.3 MB");
        assert_eq!(human_size(999_999), "1 MB");
        assert_eq!(human_size(120_000_000), "120 MB");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(20 * 86_400), "2 weeks");
        assert_eq!(human_duration(90 * 86_400), "3 months");
        assert_eq!(human_duration(800 * 86_400), "2 years");
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123456789Z"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-15T00:13:20+02:00"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z").map(rfc3339).as_deref(), Some("2000-02-29T00:00:00Z"));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn tables() {
        let t =
            table(&[vec!["A".into(), "LONGER COLUMN".into(), "X".into()], vec!["bb".into(), "c".into(), "".into()]]);
        assert_eq!(t, "A           LONGER COLUMN  X\nbb          c\n");
    }

    #[test]
    fn templates() {
        let v = serde_json::json!({"Id": "abc", "Config": {"Env": ["A=1"]}, "N": 3});
        assert_eq!(
            template("{{.Id}} {{.N}}\\t{{json .Config.Env}} {{.Nope}}", &v).unwrap(),
            "abc 3\t[\"A=1\"] <no value>"
        );
        assert!(template("{{.Id", &v).is_err());
    }
}
