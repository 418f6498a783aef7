//! `warm-pool`, a built-in autoscaler plugin that shows why policies are swappable: it
//! decides as `ray-default` does, and also keeps idle workers warm beside running work,
//! so that the next burst of tasks does not wait for pods to start.
//!
//! Configuration (JSON, the plugin's configuration text):
//!
//! ```json
//! {"warmWorkers": {"small-group": 2}, "defaultWarmWorkers": 0,
//!  "scaleToZeroAfterSeconds": 3600, "activeHours": "08:00-20:00"}
//! ```
//!
//! - `warmWorkers`: idle replicas to keep per group while the group has work (a busy
//!   worker or pending demand); `defaultWarmWorkers` for groups not named.
//! - `scaleToZeroAfterSeconds`: warm workers idle this long go too (never less than the
//!   idle timeout); absent: they stay while idle.
//! - `activeHours`: `HH:MM-HH:MM` in UTC; outside these hours no worker is kept warm and
//!   the policy is `ray-default`. Absent: always active. A window may wrap midnight.

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmray_plugin_autoscaler::{Options, decide};
use wasmray_plugin_sdk::autoscaler::{AutoscaleOutput, Autoscaler, Request};
use wasmray_plugin_sdk::serde_json::{self, Value};
use wasmray_plugin_sdk::{PluginError, Timestamp};

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub warm_workers: BTreeMap<String, u32>,
    #[serde(default)]
    pub default_warm_workers: u32,
    #[serde(default)]
    pub scale_to_zero_after_seconds: Option<u64>,
    #[serde(default)]
    pub active_hours: Option<String>,
}

/// Minutes since midnight (UTC) of the start and end of the active window.
fn parse_hours(text: &str) -> Result<(u32, u32), String> {
    let minutes = |part: &str| -> Result<u32, String> {
        let (hours, minutes) = part
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not HH:MM"))?;
        let hours: u32 = hours
            .parse()
            .map_err(|_| format!("{part:?} is not HH:MM"))?;
        let minutes: u32 = minutes
            .parse()
            .map_err(|_| format!("{part:?} is not HH:MM"))?;
        if hours > 23 || minutes > 59 {
            return Err(format!("{part:?} is not a time of day"));
        }
        Ok(hours * 60 + minutes)
    };
    let (from, to) = text
        .split_once('-')
        .ok_or_else(|| format!("activeHours {text:?} is not HH:MM-HH:MM"))?;
    Ok((minutes(from)?, minutes(to)?))
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let invalid = |message: String| PluginError {
            reason: "InvalidConfig".to_owned(),
            message,
            retry_after_ms: None,
        };
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_json::from_str(text)
            .map_err(|error| invalid(format!("warm-pool configuration: {error}")))?;
        if let Some(hours) = &config.active_hours {
            parse_hours(hours).map_err(|error| invalid(format!("activeHours: {error}")))?;
        }
        Ok(config)
    }

    /// Whether `now` is inside the active hours.
    fn active(&self, now: &Timestamp) -> bool {
        let Some((from, to)) = self
            .active_hours
            .as_deref()
            .and_then(|h| parse_hours(h).ok())
        else {
            return true;
        };
        let minute = u32::try_from(now.seconds.rem_euclid(86_400) / 60).unwrap_or(0);
        if from <= to {
            (from..to).contains(&minute)
        } else {
            minute >= from || minute < to
        }
    }

    /// The core's options for the groups of `request` at its time.
    pub fn options<C>(&self, request: &Request<C>) -> Options {
        let active = self.active(&request.now);
        Options {
            warm: request
                .groups
                .iter()
                .map(|group| {
                    let warm = if active {
                        self.warm_workers
                            .get(&group.name)
                            .copied()
                            .unwrap_or(self.default_warm_workers)
                    } else {
                        0
                    };
                    (group.name.clone(), warm)
                })
                .collect(),
            warm_idle_limit_ms: self
                .scale_to_zero_after_seconds
                .map(|s| s.saturating_mul(1000)),
        }
    }
}

/// The `warm-pool` policy.
pub struct WarmPool;

impl Autoscaler for WarmPool {
    type Cluster = Value;

    fn validate_config(config: &str) -> Result<(), PluginError> {
        Config::parse(config).map(|_| ())
    }

    fn autoscale(request: Request<Value>) -> Result<AutoscaleOutput, PluginError> {
        let config = Config::parse(&request.config)?;
        Ok(decide(&request, &config.options(&request)))
    }
}

wasmray_plugin_sdk::export_autoscaler!(WarmPool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_checked_field_by_field() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let config = Config::parse(
            r#"{"warmWorkers": {"small": 2}, "scaleToZeroAfterSeconds": 60, "activeHours": "22:00-06:00"}"#,
        )
        .unwrap();
        assert_eq!(config.warm_workers["small"], 2);
        for bad in [
            r#"{"warmWorker": {}}"#,
            r#"{"activeHours": "8-20"}"#,
            r#"{"activeHours": "08:00-24:00"}"#,
            r#"{"defaultWarmWorkers": -1}"#,
            "warm",
        ] {
            let error = Config::parse(bad).unwrap_err();
            assert_eq!(error.reason, "InvalidConfig", "{bad}");
        }
    }

    #[test]
    fn active_hours_may_wrap_midnight() {
        let at = |hour: i64| Timestamp {
            seconds: 1_800_000_000 - 1_800_000_000 % 86_400 + hour * 3600,
            nanos: 0,
        };
        let day = Config::parse(r#"{"activeHours": "08:00-20:00"}"#).unwrap();
        let night = Config::parse(r#"{"activeHours": "22:00-06:00"}"#).unwrap();
        assert!(day.active(&at(8)) && day.active(&at(19)) && !day.active(&at(20)));
        assert!(night.active(&at(23)) && night.active(&at(5)) && !night.active(&at(12)));
        assert!(Config::default().active(&at(3)));
    }
}
