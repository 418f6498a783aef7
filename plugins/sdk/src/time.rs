pub use core::time::Duration;

use crate::Timestamp;

impl Timestamp {
    /// The time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(&self, earlier: &Timestamp) -> Duration {
        let nanos = |t: &Timestamp| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
        let delta = nanos(self) - nanos(earlier);
        u64::try_from(delta).map_or(Duration::ZERO, Duration::from_nanos)
    }

    /// This instant plus a duration (saturating).
    pub fn plus(&self, duration: Duration) -> Timestamp {
        let total_nanos = u64::from(self.nanos) + u64::from(duration.subsec_nanos());
        let seconds = self
            .seconds
            .saturating_add(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX))
            .saturating_add(i64::try_from(total_nanos / 1_000_000_000).unwrap_or(0));
        Timestamp {
            seconds,
            nanos: (total_nanos % 1_000_000_000) as u32,
        }
    }

    /// As RFC 3339 text in UTC with second precision, e.g. "2026-11-23T03:53:02Z",
    /// the form Kubernetes uses in `metav1.Time`.
    pub fn to_rfc3339(&self) -> String {
        let days = self.seconds.div_euclid(86_400);
        let secs_of_day = self.seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60
        )
    }
}

/// Parses RFC 3339 UTC text as Kubernetes writes it ("2026-11-23T03:53:02Z", optional
/// fraction); None if it is not in that form.
pub fn timestamp_from_rfc3339(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[10] != b'T' || !text.ends_with('Z') {
        return None;
    }
    let num = |range: core::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let fraction = &text[19..text.len() - 1];
    let nanos = match fraction.strip_prefix('.') {
        Some(digits) if !digits.is_empty() && digits.len() <= 9 => {
            digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
        }
        Some(_) => return None,
        None if fraction.is_empty() => 0,
        None => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(Timestamp { seconds, nanos })
}

// Proleptic Gregorian calendar conversions (Howard Hinnant's algorithms): the guest has
// no clock or time-zone database, and these are all Kubernetes timestamps need.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Timestamp {
    /// As a Kubernetes `metav1.Time`, in whole seconds (Kubernetes keeps no more, so
    /// comparisons with stored times stay exact).
    pub fn to_kube_time(&self) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        use k8s_openapi::jiff::Timestamp as Instant;
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Instant::from_second(self.seconds).unwrap_or(Instant::UNIX_EPOCH),
        )
    }

    /// From a Kubernetes `metav1.Time` (whole seconds).
    pub fn from_kube_time(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Self {
        Timestamp {
            seconds: time.0.as_second(),
            nanos: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let parsed = timestamp_from_rfc3339("2026-11-23T03:53:02Z").unwrap();
        assert_eq!(parsed.seconds, 1_795_405_982);
        assert_eq!(parsed.to_rfc3339(), "2026-11-23T03:53:02Z");
        let leap = timestamp_from_rfc3339("2024-02-29T23:59:59.5Z").unwrap();
        assert_eq!(leap.nanos, 500_000_000);
        assert_eq!(leap.to_rfc3339(), "2024-02-29T23:59:59Z");
        assert!(timestamp_from_rfc3339("2026-11-23 03:53:02").is_none());
    }

    #[test]
    fn since_and_plus() {
        let start = Timestamp {
            seconds: 100,
            nanos: 900_000_000,
        };
        let later = start.plus(Duration::from_millis(250));
        assert_eq!(
            later,
            Timestamp {
                seconds: 101,
                nanos: 150_000_000
            }
        );
        assert_eq!(later.since(&start), Duration::from_millis(250));
        assert_eq!(start.since(&later), Duration::ZERO);
    }
}
