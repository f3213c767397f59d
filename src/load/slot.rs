//! One logical connection ("slot") of the load client: connect, run an echo
//! or resume session on it, and with `--reconnect` start over after a failed
//! attempt or a disconnect, waiting an exponential backoff with full jitter
//! ([`Backoff`]).
//!
//! Echo sessions are in [`super::echo_check`], resume sessions in
//! [`super::resume`] (with their state machine in [`super::resume_state`],
//! kept across reconnects); what they share is in [`super::session`].
//! Latencies go into per-slot HDR histograms (merged at the end); live
//! counters are pushed to `LiveStats` as deltas a few times a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt as _;
use tokio_util::sync::CancellationToken;

use super::live::LiveStats;
use super::report::MessageCounts;
use super::resume_state::{Action, ResumeState};
use super::session::{connect, Ctx, SessionEnd, SlotResult, Tally};
use super::{echo_check, resume, script_session, Mode};

/// Exponential backoff with full jitter: before retry n (from 0) wait a
/// uniformly random time in `0..=min(base × 2^n, cap)`. The attempt counter
/// goes back to 0 once a connection was usable.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// The client's backoff: 100 ms doubling, at most 5 s.
    pub fn new() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            attempt: 0,
        }
    }

    /// The upper bound of the next wait.
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap)
    }

    /// The next wait, drawn with `rng`; counts the attempt.
    pub fn next_delay(&mut self, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let us = ceiling.as_micros().min(u128::from(u64::MAX)) as u64;
        Duration::from_micros(rng.random_range(0..=us))
    }

    /// A connection was usable: start again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Runs one slot until the run (or the slot) is stopped and drained.
pub(crate) async fn run_slot(ctx: Arc<Ctx>, id: u32, stop: CancellationToken) -> SlotResult {
    let mut tally = Tally::new(ctx, id, stop);
    let mut backoff = Backoff::new();
    let mut resume = (tally.ctx.mode == Mode::Resume).then(|| {
        ResumeState::new(
            format!("wsfault-load-{:016x}-{id}", tally.ctx.run_id),
            id,
            tally.ctx.message_bytes,
            tally.ctx.resend_after,
        )
    });
    let mut script = tally
        .ctx
        .script
        .clone()
        .map(script_session::ScriptSlot::new);
    let mut echo_seq: u64 = 0;
    loop {
        if tally.ctx.hard_stop.is_cancelled() || tally.draining_over() {
            break;
        }
        if tally.stop.is_cancelled() {
            tally.start_drain();
            // Only a resume slot with unacknowledged messages reconnects to drain.
            let pending = resume.as_ref().is_some_and(|r| !r.settled());
            if !pending || !tally.ctx.reconnect {
                break;
            }
        }
        let ctx = tally.ctx.clone();
        let url = script.as_ref().and_then(|s| s.url(id));
        let connected = tokio::select! {
            r = connect(&ctx, url.as_deref().unwrap_or(&ctx.url)) => r,
            // The run ended while connecting: not an attempt that could
            // succeed or fail, so it is not counted.
            _ = ctx.hard_stop.cancelled() => break,
        };
        tally.res.attempted += 1;
        LiveStats::add(&tally.ctx.live.attempted, 1);
        let end = match connected {
            Err(message) => SessionEnd::Failed(message),
            Ok(ws) => match (resume.as_mut(), script.as_mut()) {
                (Some(state), _) => resume::session(&mut tally, ws, state).await,
                (None, Some(slot)) => script_session::session(&mut tally, ws, slot).await,
                (None, None) => echo_check::session(&mut tally, ws, &mut echo_seq).await,
            },
        };
        match end {
            SessionEnd::Finished => break,
            SessionEnd::Failed(message) => {
                tally.res.failed += 1;
                LiveStats::add(&ctx.live.failed, 1);
                ctx.record_error(message);
            }
            SessionEnd::Dropped(message) => {
                // It was usable: the next wait starts from the base again.
                backoff.reset();
                tally.res.disconnects += 1;
                LiveStats::add(&ctx.live.disconnects, 1);
                ctx.record_error(message);
                tally.down_since.get_or_insert_with(Instant::now);
            }
        }
        match (resume.as_ref(), script.as_ref()) {
            (Some(state), _) => tally.push_live(state.counts()),
            (None, Some(slot)) => tally.push_live(&slot.counts),
            (None, None) => tally.push_live(&MessageCounts::default()),
        }
        if !ctx.reconnect {
            break;
        }
        let delay = backoff.next_delay(&mut rand::rng());
        // A resume slot keeps reconnecting while it drains; an echo slot stops.
        let resume_draining = ctx.mode == Mode::Resume;
        let stop = tally.stop.clone();
        let go_on = tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = ctx.hard_stop.cancelled() => false,
            _ = stop.cancelled(), if !resume_draining => false,
        };
        if !go_on {
            break;
        }
    }
    if let Some(state) = resume.as_mut() {
        let mut actions = Vec::new();
        let counts = state.finish(Instant::now(), &mut actions);
        for action in actions {
            if let Action::Latency { us } = action {
                tally.record_latency(us);
            }
        }
        tally.res.msgs.add(&counts);
    }
    if let Some(slot) = script.as_mut() {
        tally.res.msgs.add(&slot.finish());
        tally.res.heartbeats += slot.heartbeats;
    }
    tally.push_live(&MessageCounts::default());
    tally.res
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(b.ceiling().as_millis());
            let _ = b.next_delay(&mut rand::rngs::SmallRng::seed_from_u64(1));
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        for _ in 0..100 {
            let _ = b.next_delay(&mut rand::rngs::SmallRng::seed_from_u64(1));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(5), "no overflow");
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn backoff_draws_over_the_whole_range() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut b = Backoff::new();
        let draws: Vec<Duration> = (0..2000)
            .map(|_| {
                b.reset();
                b.next_delay(&mut rng)
            })
            .collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(100)));
        assert!(draws.iter().any(|d| *d < Duration::from_millis(10)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(90)));
    }
}
