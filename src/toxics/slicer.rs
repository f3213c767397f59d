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
