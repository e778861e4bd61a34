//! Wall-clock times as request logs print them, in UTC (a container's
//! usual local time; podmaster reads no time-zone database): RFC 3339 for
//! JSON (as podmaster's other JSON log lines), `ctime` for uWSGI's default
//! line and `%(ctime)`, Apache's `%d/%b/%Y:%H:%M:%S +0000` for `%(ltime)`.
//! Pure arithmetic (days to a civil date, Howard Hinnant's algorithm):
//! no allocation beyond the output, no libc locale or lock.

use std::io::Write;
use std::time::{Duration, SystemTime};

use super::push_digits;

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// A UTC time broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Civil {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
    /// Days since 1970-01-01 (a Thursday).
    days: i64,
}

impl Civil {
    pub fn of(t: SystemTime) -> Civil {
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = since.as_secs() as i64;
        let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        let (year, month, day) = crate::worker::statics::date::civil(days);
        Civil {
            year,
            month,
            day,
            hour: rest / 3600,
            minute: rest / 60 % 60,
            second: rest % 60,
            micros: since.subsec_micros(),
            days,
        }
    }

    fn month_name(&self) -> &'static str {
        MONTHS[(self.month as usize).saturating_sub(1) % 12]
    }

    fn year(&self, out: &mut Vec<u8>) {
        if (0..10_000).contains(&self.year) {
            push_digits(out, self.year as u64, 4);
        } else {
            let _ = write!(out, "{}", self.year);
        }
    }

    /// `12:00:00`
    fn clock(&self, out: &mut Vec<u8>) {
        push_digits(out, u64::from(self.hour), 2);
        out.push(b':');
        push_digits(out, u64::from(self.minute), 2);
        out.push(b':');
        push_digits(out, u64::from(self.second), 2);
    }

    /// `2024-05-06T12:00:00.123456Z`
    pub fn rfc3339(&self, out: &mut Vec<u8>) {
        self.year(out);
        out.push(b'-');
        push_digits(out, u64::from(self.month), 2);
        out.push(b'-');
        push_digits(out, u64::from(self.day), 2);
        out.push(b'T');
        self.clock(out);
        out.push(b'.');
        push_digits(out, u64::from(self.micros), 6);
        out.push(b'Z');
    }

    /// `Mon May  6 12:00:00 2024` (C's `ctime`, without its newline).
    pub fn ctime(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(DAYS[self.days.rem_euclid(7) as usize].as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.month_name().as_bytes());
        out.push(b' ');
        out.push(if self.day < 10 { b' ' } else { b'0' + (self.day / 10) as u8 });
        out.push(b'0' + (self.day % 10) as u8);
        out.push(b' ');
        self.clock(out);
        out.push(b' ');
        self.year(out);
    }

    /// `06/May/2024:12:00:00 +0000` (Apache's `%t`, uWSGI's `%(ltime)`).
    pub fn apache(&self, out: &mut Vec<u8>) {
        push_digits(out, u64::from(self.day), 2);
        out.push(b'/');
        out.extend_from_slice(self.month_name().as_bytes());
        out.push(b'/');
        self.year(out);
        out.push(b':');
        self.clock(out);
        out.extend_from_slice(b" +0000");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u32) -> Civil {
        Civil::of(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)))
    }

    fn text(f: impl Fn(&Civil, &mut Vec<u8>), c: &Civil) -> String {
        let mut v = Vec::new();
        f(c, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn known_dates_in_every_format() {
        // date -u -d @1715000000: Mon May  6 12:53:20 UTC 2024
        let c = at(1_715_000_000, 42);
        assert_eq!(text(Civil::rfc3339, &c), "2024-05-06T12:53:20.000042Z");
        assert_eq!(text(Civil::ctime, &c), "Mon May  6 12:53:20 2024");
        assert_eq!(text(Civil::apache, &c), "06/May/2024:12:53:20 +0000");
        assert_eq!(text(Civil::ctime, &at(0, 0)), "Thu Jan  1 00:00:00 1970");
        // A leap day and the last second of a century year.
        assert_eq!(text(Civil::rfc3339, &at(951_782_400, 0)), "2000-02-29T00:00:00.000000Z");
        assert_eq!(text(Civil::ctime, &at(4_133_980_799, 0)), "Fri Dec 31 23:59:59 2100");
        // Before the epoch (a clock set wrong) reads as the epoch.
        let before = Civil::of(SystemTime::UNIX_EPOCH - Duration::from_secs(10));
        assert_eq!(text(Civil::rfc3339, &before), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        let mut prev = at(0, 0);
        for day in 1..(400 * 366) {
            let c = at(day * 86_400, 0);
            let next_day = c.day == prev.day + 1 && c.month == prev.month && c.year == prev.year;
            let next_month = c.day == 1 && (c.month == prev.month + 1 || (c.month == 1 && c.year == prev.year + 1));
            assert!(next_day || next_month, "{prev:?} -> {c:?}");
            prev = c;
        }
    }
}
