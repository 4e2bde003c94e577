//! Transfer rates and the token bucket that enforces them.
//!
//! Rates are written as in the config files: `"0"` (unlimited), `"300KiB/s"`, `"2MB/s"`,
//! `"1.5 MiB/s"`. A [`RateLimiter`] is shared by every transfer it governs (all sessions of a
//! user, or the whole server), so N parallel sessions together stay under one limit instead
//! of each getting the full rate.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

/// Bytes per second; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate(Option<u64>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate \"{value}\": {reason} (write e.g. \"0\" for unlimited, \"300KiB/s\", \"2MB/s\")"
)]
pub struct RateError {
    pub value: String,
    pub reason: &'static str,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate(None);

    pub fn bytes_per_second(bytes: u64) -> Rate {
        Rate(if bytes == 0 { None } else { Some(bytes) })
    }

    /// Bytes per second, or `None` when unlimited.
    pub fn get(self) -> Option<u64> {
        self.0
    }

    pub fn is_unlimited(self) -> bool {
        self.0.is_none()
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let text = value.trim();
        let text = text.strip_suffix("/s").unwrap_or(text).trim_end();
        parse_bytes(text)
            .map(Rate::bytes_per_second)
            .map_err(|reason| RateError {
                value: value.to_owned(),
                reason,
            })
    }
}

/// Parses an amount of bytes written like `"64KiB"`, `"2MB"`, `"1.5 MiB"` or `"512"`; the
/// error is the reason. Shared by rates and sizes so both read the same.
pub fn parse_bytes(text: &str) -> Result<u64, &'static str> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err("it does not start with a number");
    }
    let number: f64 = number.parse().map_err(|_| "the number is malformed")?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return Err("the unit is not one of B, KB, KiB, MB, MiB, GB, GiB"),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err("the amount is too large");
    }
    if bytes > 0.0 && bytes < 1.0 {
        return Err("the amount is below 1 byte");
    }
    Ok(bytes as u64)
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("0"),
            Some(bytes) => {
                for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
                    if bytes % size == 0 {
                        return write!(f, "{}{unit}/s", bytes / size);
                    }
                }
                write!(f, "{bytes}B/s")
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Raw::Number(bytes) => Ok(Rate::bytes_per_second(bytes)),
        }
    }
}

impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A token bucket that may go into debt.
///
/// A transfer reads first and is charged after ([`RateLimiter::charge`]); the charge returns
/// how long to pause so that the bucket's owners together keep to the rate. This suits byte
/// streams whose chunk sizes are not known in advance, and lets one limiter be shared by
/// any number of sessions. The rate can be changed while transfers run.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    rate: Rate,
    /// Bytes that may pass without waiting; negative while in debt.
    tokens: f64,
    last: Instant,
}

/// How much a bucket may save up while idle: a tenth of a second of traffic, at least 16 KiB.
fn burst(rate: u64) -> f64 {
    (rate as f64 / 10.0).max(16.0 * 1024.0)
}

impl RateLimiter {
    pub fn new(rate: Rate) -> Self {
        RateLimiter {
            state: Mutex::new(BucketState {
                rate,
                tokens: rate.get().map_or(0.0, burst),
                last: Instant::now(),
            }),
        }
    }

    pub fn rate(&self) -> Rate {
        self.lock().rate
    }

    /// Changes the rate for every transfer sharing this limiter, from now on.
    pub fn set_rate(&self, rate: Rate) {
        let mut state = self.lock();
        if state.rate != rate {
            state.rate = rate;
            state.tokens = state.tokens.min(rate.get().map_or(0.0, burst));
            state.last = Instant::now();
        }
    }

    /// Records that `bytes` passed and returns how long the caller should pause before it
    /// moves more.
    pub fn charge(&self, bytes: u64) -> Duration {
        let mut state = self.lock();
        let Some(rate) = state.rate.get() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let refill = now.duration_since(state.last).as_secs_f64() * rate as f64;
        state.last = now;
        state.tokens = (state.tokens + refill).min(burst(rate)) - bytes as f64;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / rate as f64)
        }
    }

    /// Takes `bytes` if the bucket holds them now, else takes nothing and returns false:
    /// for traffic that is dropped rather than delayed (a UDP flood), so the drops do not
    /// run the bucket into debt and starve what the sender sends once it calms down.
    pub fn try_take(&self, bytes: u64) -> bool {
        let mut state = self.lock();
        let Some(rate) = state.rate.get() else {
            return true;
        };
        let now = Instant::now();
        let refill = now.duration_since(state.last).as_secs_f64() * rate as f64;
        state.last = now;
        state.tokens = (state.tokens + refill).min(burst(rate));
        if state.tokens >= bytes as f64 {
            state.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BucketState> {
        // A panic while holding this lock cannot leave the bucket inconsistent: use it anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A reader that keeps to the rate of every limiter it is charged to.
pub struct ThrottledReader<R> {
    inner: R,
    limiters: Vec<Arc<RateLimiter>>,
    pause: Option<Pin<Box<Sleep>>>,
    bytes: u64,
}

impl<R> ThrottledReader<R> {
    pub fn new(inner: R, limiters: Vec<Arc<RateLimiter>>) -> Self {
        ThrottledReader {
            inner,
            limiters,
            pause: None,
            bytes: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ThrottledReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(pause) = this.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.pause = None;
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            this.bytes += n;
            let wait = this
                .limiters
                .iter()
                .map(|limiter| limiter.charge(n))
                .max()
                .unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                this.pause = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        let cases = [
            ("0", None),
            ("0KiB/s", None),
            ("300KiB/s", Some(300 * 1024)),
            ("2MB/s", Some(2_000_000)),
            ("1.5 MiB/s", Some(3 << 19)),
            ("1024", Some(1024)),
            ("512B/s", Some(512)),
            ("1GiB", Some(1 << 30)),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<Rate>().unwrap().get(), bytes, "{text}");
        }
    }

    #[test]
    fn refuses_bad_rates_with_the_value() {
        for bad in [
            "",
            "fast",
            "10 parsecs",
            "-5MB/s",
            "1..2MB/s",
            "0.5B/s",
            "1e400",
        ] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert_eq!(err.value, bad);
            assert!(err.to_string().contains(&format!("\"{bad}\"")));
        }
    }

    #[test]
    fn displays_round_trip() {
        for text in ["0", "300KiB/s", "2MiB/s", "1000B/s"] {
            assert_eq!(text.parse::<Rate>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn debt_grows_with_charges_and_is_shared() {
        let limiter = RateLimiter::new(Rate::bytes_per_second(100_000));
        // The initial burst (16 KiB) passes; the next 100 kB put the bucket about a second in debt.
        assert_eq!(limiter.charge(16 * 1024), Duration::ZERO);
        let wait = limiter.charge(100_000);
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_millis(1010));
        // A second sharer is behind the first one's debt.
        assert!(limiter.charge(10_000) > wait);
        limiter.set_rate(Rate::UNLIMITED);
        assert_eq!(limiter.charge(1 << 30), Duration::ZERO);
    }
}
