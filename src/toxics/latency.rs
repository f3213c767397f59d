//! `latency`: each frame waits latency ± jitter ms; order within the stream kept.

use std::sync::Arc;

use rand::RngExt;

use super::api::{ms, InstanceCx, Item, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use crate::frame::Frame;

#[derive(Debug)]
struct Latency {
    latency: u64,
    jitter: u64,
}

/// Parses `latency` (ms, required) and `jitter` (ms, default 0).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let latency = attrs.u64("latency", 0..=3_600_000)?;
    let jitter = attrs.u64_or("jitter", 0..=3_600_000, 0)?;
    Ok(Arc::new(Latency { latency, jitter }))
}

impl ToxicDef for Latency {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            latency: self.latency,
            jitter: self.jitter,
        })
    }
    fn is_inert(&self) -> bool {
        self.latency == 0 && self.jitter == 0
    }
}

struct State {
    latency: u64,
    jitter: u64,
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let delay = if self.jitter == 0 {
            self.latency
        } else {
            let low = self.latency.saturating_sub(self.jitter);
            cx.rng.random_range(low..=self.latency + self.jitter)
        };
        cx.act();
        let at = cx.ready_at + ms(delay);
        cx.emit_at(Item::Frame(frame), at);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::toxics::testkit::{at, def, parse_error, text, Kit};

    /// Release offsets (ms after the base) of `n` frames all ready at the base.
    fn delays(kit: &mut Kit, n: usize) -> Vec<u128> {
        (0..n)
            .map(|i| {
                let out = kit.frame(0, text(&i.to_string()));
                assert_eq!(out.len(), 1, "one frame in, one frame out");
                out[0].not_before.duration_since(kit.base).as_millis()
            })
            .collect()
    }

    #[test]
    fn fixed_latency_counts_from_when_the_frame_is_ready() {
        let mut kit = Kit::new("latency", json!({"latency": 100}), 7);
        let out = kit.frame(0, text("a"));
        assert_eq!(kit.log(&out), [at(100, "text:a")]);
        // Held until 70 ms by an earlier toxic, handled at 40 ms: 70 + 100.
        let out = kit.frame_ready(kit.t(40), kit.t(70), text("b"));
        assert_eq!(kit.log(&out), [at(170, "text:b")]);
        assert_eq!(kit.actions, 2, "one action per delayed frame");
    }

    #[test]
    fn jitter_100_20_seed_7_releases_at_exact_seeded_instants() {
        let mut kit = Kit::new("latency", json!({"latency": 100, "jitter": 20}), 7);
        let got = delays(&mut kit, 12);
        assert_eq!(got, [82, 87, 109, 97, 119, 99, 109, 93, 120, 83, 84, 87]);
        assert!(got.iter().all(|d| (80..=120).contains(d)), "{got:?}");
        let (min, max) = (got.iter().min(), got.iter().max());
        assert!(
            max.zip(min).is_some_and(|(a, b)| a - b >= 20),
            "spread {got:?}"
        );
        let mut again = Kit::new("latency", json!({"latency": 100, "jitter": 20}), 7);
        assert_eq!(delays(&mut again, 12), got, "same seed, same delays");
        let mut other = Kit::new("latency", json!({"latency": 100, "jitter": 20}), 8);
        assert_ne!(delays(&mut other, 12), got, "another seed, other delays");
    }

    #[test]
    fn jitter_larger_than_latency_stops_at_zero() {
        let mut kit = Kit::new("latency", json!({"latency": 10, "jitter": 50}), 3);
        let got = delays(&mut kit, 12);
        // Low bound 10 - 50 saturates at 0: delays below 10 ms occur.
        assert_eq!(got, [3, 39, 52, 51, 38, 6, 10, 38, 33, 1, 35, 12]);
        assert!(got.iter().all(|d| *d <= 60), "{got:?}");
    }

    #[test]
    fn zero_latency_without_jitter_is_inert() {
        assert!(def("latency", json!({"latency": 0})).is_inert());
        assert!(!def("latency", json!({"latency": 0, "jitter": 5})).is_inert());
        assert!(!def("latency", json!({"latency": 1})).is_inert());
    }

    #[test]
    fn parse_errors_name_field_value_and_range() {
        assert_eq!(
            parse_error("latency", json!({})),
            "latency attribute latency is missing: valid range is integers 0..=3600000"
        );
        assert_eq!(
            parse_error("latency", json!({"latency": 5, "jitter": "lots"})),
            "latency attribute jitter=\"lots\" is invalid: valid range is integers 0..=3600000"
        );
        assert_eq!(
            parse_error("latency", json!({"latency": -5})),
            "latency attribute latency=-5 is invalid: valid range is integers 0..=3600000"
        );
    }
}
