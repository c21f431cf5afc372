//! Docker's log frames as [`LogLine`]s.
//!
//! With `timestamps=true` the engine puts each record's time (RFC 3339 with
//! nanoseconds, UTC) and a space before the record's text; a record ends with
//! a newline unless the engine cut a long line in pieces.

use shoal_runtime::{LogLine, Stream};

/// The lines of one frame of `stream`, each with the time the engine gave it.
pub(crate) fn frame_lines(stream: Stream, frame: &[u8], out: &mut Vec<LogLine>) {
    let text = frame.strip_suffix(b"\n").unwrap_or(frame);
    for record in text.split(|&b| b == b'\n') {
        let (time_ns, line) = match record.iter().position(|&b| b == b' ') {
            Some(space) => match parse_rfc3339_ns(&record[..space]) {
                Some(t) => (t, &record[space + 1..]),
                None => (0, record),
            },
            None => match parse_rfc3339_ns(record) {
                // A record with an empty line: the time and nothing else.
                Some(t) => (t, &record[record.len()..]),
                None => (0, record),
            },
        };
        out.push(LogLine {
            time_ns,
            stream,
            line: String::from_utf8_lossy(line).into_owned(),
        });
    }
}

/// `2026-11-25T23:30:31.123456789Z` (fraction optional, any length up to 9
/// digits, UTC only) as nanoseconds since the Unix epoch.
pub(crate) fn parse_rfc3339_ns(s: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(s).ok()?;
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':');
    let hour: u64 = t.next()?.parse().ok()?;
    let minute: u64 = t.next()?.parse().ok()?;
    let second: u64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32)
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

/// Days from 1970-01-01 to the date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_rfc3339_ns(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns(b"2026-11-25T23:30:31.123456789Z"),
            Some(1_795_649_431_123_456_789)
        );
        // Go trims trailing zeros of the fraction.
        assert_eq!(
            parse_rfc3339_ns(b"2000-03-01T00:00:01.5Z"),
            Some(951_868_801_500_000_000)
        );
        for bad in [
            &b"2026-11-25T23:30:31+01:00"[..],
            b"2026-13-25T23:30:31Z",
            b"2026-11-25 23:30:31Z",
            b"2026-11-25T23:30:31.1234567890Z",
            b"hello",
        ] {
            assert_eq!(
                parse_rfc3339_ns(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn frames_become_lines() {
        let mut out = Vec::new();
        frame_lines(
            Stream::Stderr,
            b"2026-11-25T23:30:31.000000001Z err here\n",
            &mut out,
        );
        frame_lines(Stream::Stdout, b"2026-11-25T23:30:31Z\n", &mut out);
        frame_lines(Stream::Stdout, b"no time", &mut out);
        assert_eq!(out[0].line, "err here");
        assert_eq!(out[0].stream, Stream::Stderr);
        assert_eq!(out[0].time_ns, 1_795_649_431_000_000_001);
        assert_eq!(out[1].line, "");
        assert_eq!(out[1].time_ns, 1_795_649_431_000_000_000);
        assert_eq!((out[2].line.as_str(), out[2].time_ns), ("no time", 0));
    }
}
