//! `slicer` (Toxiproxy's names): each data frame is re-sent as continuation
//! frames of about `average_size` ± `size_variation` bytes, `delay` µs apart.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;

use super::api::{InstanceCx, Item, ToxicCx, ToxicDef, ToxicState};
use super::attrs::{AttrError, Attributes};
use super::fragment::split_frame;
use crate::frame::Frame;

#[derive(Debug)]
struct Slicer {
    average_size: u64,
    size_variation: u64,
    delay_us: u64,
}

/// Parses `average_size` (required, ≥ 1), `size_variation` (default 0,
/// below average_size) and `delay` (µs, default 0).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let average_size = attrs.u64("average_size", 1..=u64::from(u32::MAX))?;
    let size_variation = attrs.u64_or("size_variation", 0..=average_size - 1, 0)?;
    let delay_us = attrs.u64_or("delay", 0..=60_000_000, 0)?;
    Ok(Arc::new(Slicer {
        average_size,
        size_variation,
        delay_us,
    }))
}

impl ToxicDef for Slicer {
    fn instantiate(&self, _cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            average: self.average_size as usize,
            variation: self.size_variation as usize,
            delay: Duration::from_micros(self.delay_us),
        })
    }
}

struct State {
    average: usize,
    variation: usize,
    delay: Duration,
}

impl ToxicState for State {
    fn on_frame(&mut self, frame: Frame, cx: &mut ToxicCx<'_>) {
        let len = frame.payload.len();
        if !frame.header.opcode.is_data()
            || len <= self.average.saturating_sub(self.variation).max(1)
        {
            cx.emit(Item::Frame(frame));
            return;
        }
        let mut sizes = Vec::new();
        let mut left = len;
        while left > 0 {
            let size = if self.variation == 0 {
                self.average
            } else {
                cx.rng
                    .random_range(self.average - self.variation..=self.average + self.variation)
            };
            let size = size.clamp(1, left);
            sizes.push(size);
            left -= size;
        }
        if sizes.len() == 1 {
            cx.emit(Item::Frame(frame));
            return;
        }
        cx.act();
        let delay = self.delay;
        split_frame(frame, &sizes, false, |i| delay * i as u32, cx);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::frame::Opcode;
    use crate::toxics::testkit::{at, frame, frames, parse_error, ping, text, Kit};

    fn us(n: u64, what: &str) -> (Duration, String) {
        (Duration::from_micros(n), what.to_string())
    }

    #[test]
    fn fixed_size_slices_are_spaced_delay_microseconds_apart() {
        let mut kit = Kit::new("slicer", json!({"average_size": 4, "delay": 100}), 1);
        let out = kit.frame(0, text("abcdefghij"));
        assert_eq!(
            kit.log(&out),
            [
                us(0, "text+:abcd"),
                us(100, "cont+:efgh"),
                us(200, "cont:ij")
            ]
        );
        assert_eq!(kit.actions, 1, "one action per sliced frame");
    }

    #[test]
    fn varied_sizes_are_seeded_and_within_average_plus_minus_variation() {
        let payload = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN";
        let attrs = json!({"average_size": 4, "size_variation": 2});
        let mut kit = Kit::new("slicer", attrs.clone(), 5);
        let out = kit.frame(0, text(payload));
        let sizes: Vec<usize> = frames(&out).iter().map(|f| f.payload.len()).collect();
        // The last slice takes what is left (1 byte here).
        assert_eq!(sizes, [3, 5, 2, 2, 4, 5, 4, 2, 6, 6, 1]);
        let (body, last) = sizes.split_at(sizes.len() - 1);
        assert!(body.iter().all(|s| (2..=6).contains(s)), "{sizes:?}");
        assert!((1..=6).contains(&last[0]), "{sizes:?}");
        assert!(body.iter().min() != body.iter().max(), "spread {sizes:?}");
        let joined: Vec<u8> = frames(&out)
            .iter()
            .flat_map(|f| f.plain_payload().to_vec())
            .collect();
        assert_eq!(joined, payload.as_bytes(), "nothing lost or reordered");
        let mut again = Kit::new("slicer", attrs, 5);
        let same: Vec<usize> = frames(&again.frame(0, text(payload)))
            .iter()
            .map(|f| f.payload.len())
            .collect();
        assert_eq!(same, sizes, "same seed, same slices");
    }

    #[test]
    fn small_and_control_frames_pass_whole() {
        let mut kit = Kit::new("slicer", json!({"average_size": 4, "size_variation": 2}), 1);
        // At most average - variation = 2 bytes: never sliced.
        let out = kit.frame(0, text("ab"));
        assert_eq!(kit.log(&out), [at(0, "text:ab")]);
        let out = kit.frame(0, ping("abcdefghij"));
        assert_eq!(kit.log(&out), [at(0, "ping:abcdefghij")]);
        assert_eq!(kit.actions, 0);
    }

    #[test]
    fn a_non_final_fragment_stays_non_final() {
        let mut kit = Kit::new("slicer", json!({"average_size": 3}), 1);
        let out = kit.frame(0, frame(false, Opcode::Binary, "abcdef"));
        assert_eq!(kit.log(&out), [at(0, "binary+:abc"), at(0, "cont+:def")]);
    }

    #[test]
    fn variation_must_stay_below_the_average() {
        assert_eq!(
            parse_error("slicer", json!({"average_size": 4, "size_variation": 4})),
            "slicer attribute size_variation=4 is invalid: valid range is integers 0..=3"
        );
        assert_eq!(
            parse_error("slicer", json!({"average_size": 0})),
            "slicer attribute average_size=0 is invalid: valid range is integers 1..=4294967295"
        );
    }
}
