//! Script mode: one connection of a slot driving the user's service as its
//! script says (docs/reference.md#script-mode) — the `open` steps, the
//! `send` template at the current rate, heartbeat answers in the service's
//! protocol, and every server message through the pure checks of
//! [`super::script_check`].
//!
//! What outlives a connection is the slot's [`ScriptSlot`]: the message
//! number (so ids stay unique across reconnects), the counts, and the
//! sequence state when the script says `resume: true`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use regex::{CaptureLocations, Regex};
use tokio_tungstenite::tungstenite::Message;

use super::report::MessageCounts;
use super::script::{Script, ScriptRun, Step};
use super::script_check::{Answer, ReplyCheck, SequenceCheck};
use super::session::{
    describe_close, describe_ws_error, end_session, initial_jitter, FrameQueue, SessionEnd, Tally,
    Ws, LIVE_PUSH,
};
use super::template::{Template, Vars};
use crate::frame::Opcode;
use crate::protocols::{self, Kind};

/// Messages queued for the writer before new sends are skipped.
const MAX_QUEUED: usize = 1024;
const TICK: Duration = Duration::from_millis(100);
/// How long a draining connection stays open once nothing is outstanding,
/// so that a late duplicate is still counted.
const LINGER: Duration = Duration::from_millis(300);

/// What a slot keeps across its connections.
pub(crate) struct ScriptSlot {
    run: Arc<ScriptRun>,
    /// Messages sent by this slot (`{{n}}` of the next is this + 1).
    n: u64,
    sequence: Option<SequenceCheck>,
    /// Counts of this slot not yet in its result.
    pub counts: MessageCounts,
    /// Server heartbeats answered.
    pub heartbeats: u64,
    connections: u64,
}

impl ScriptSlot {
    pub fn new(run: Arc<ScriptRun>) -> Self {
        let sequence = run
            .script
            .sequence
            .as_ref()
            .map(|s| SequenceCheck::new(s.first));
        ScriptSlot {
            run,
            n: 0,
            sequence,
            counts: MessageCounts::default(),
            heartbeats: 0,
            connections: 0,
        }
    }

    /// The slot is done: numbers still missing are lost.
    pub fn finish(&mut self) -> MessageCounts {
        let mut counts = std::mem::take(&mut self.counts);
        if let Some(seq) = &self.sequence {
            counts.lost += seq.lost();
        }
        counts
    }

    /// The URL of the next connection, when the URL has placeholders.
    pub fn url(&self, conn: u32) -> Option<String> {
        let t = self.run.url.as_ref()?;
        Some(t.render(&self.vars(conn), &mut String::new()))
    }

    fn vars(&self, conn: u32) -> Vars {
        Vars {
            conn,
            n: self.n,
            last_seq: self.sequence.as_ref().map_or(0, SequenceCheck::last_seq),
            now_ms: if self.run.uses_now {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            } else {
                0
            },
            uuid: if self.run.uses_uuid {
                rand::random::<u128>()
            } else {
                0
            },
        }
    }
}

/// Reusable match state of one connection (no allocation per message).
struct Matchers {
    reply: Option<(Regex, CaptureLocations)>,
    seq: Option<(Regex, CaptureLocations)>,
    key: Option<(Regex, CaptureLocations)>,
}

impl Matchers {
    fn new(script: &Script) -> Self {
        let with_locs = |re: &Regex| (re.clone(), re.capture_locations());
        Matchers {
            reply: script.reply.as_ref().map(|r| with_locs(&r.id)),
            seq: script.sequence.as_ref().map(|s| with_locs(&s.seq)),
            key: script
                .sequence
                .as_ref()
                .and_then(|s| s.key.as_ref())
                .map(with_locs),
        }
    }
}

/// The first group of `m` in `text`, if it matches.
fn group<'t>(m: &mut Option<(Regex, CaptureLocations)>, text: &'t str) -> Option<&'t str> {
    let (re, locs) = m.as_mut()?;
    re.captures_read(locs, text)?;
    let (start, end) = locs.get(1)?;
    text.get(start..end)
}

/// One connection's state around the slot's.
struct Conn<'a> {
    slot: &'a mut ScriptSlot,
    frames: FrameQueue,
    matchers: Matchers,
    reply: Option<ReplyCheck>,
    /// A reusable render buffer.
    scratch: String,
    /// When the last server heartbeat was answered, and how many were.
    last_heartbeat: Option<Instant>,
    heartbeats_here: u64,
    /// A close message of the service's protocol (Engine.IO `1`, …).
    service_close: Option<String>,
    /// How long the service waits for a heartbeat answer, if it said.
    heartbeat_timeout: Option<Duration>,
}

impl Conn<'_> {
    /// One server message (text, or binary that is UTF-8).
    fn on_message(&mut self, tally: &mut Tally, text: &str, now: Instant) {
        let profile = self.slot.run.profile;
        match protocols::classify(profile, Opcode::Text, text.as_bytes(), true) {
            Kind::Heartbeat if profile.name() != "none" => {
                if let Some(answer) = profile.answer_heartbeat(text) {
                    self.frames.send(Message::Text(answer.into()));
                    self.slot.heartbeats += 1;
                    self.heartbeats_here += 1;
                    self.last_heartbeat = Some(now);
                }
                return;
            }
            Kind::Close if profile.name() != "none" => {
                let shown: String = text.chars().take(40).collect();
                self.service_close = Some(shown);
            }
            Kind::Handshake => self.observe_handshake(text),
            _ => {}
        }
        let mut answered = false;
        if let (Some(check), Some(id)) =
            (self.reply.as_mut(), group(&mut self.matchers.reply, text))
        {
            match check.answer(self.slot.run.ids.hash(id), now) {
                Answer::First { latency } => {
                    answered = true;
                    self.slot.counts.received += 1;
                    tally.record_latency(latency.as_micros() as u64);
                }
                Answer::Duplicate => self.slot.counts.duplicated += 1,
                Answer::Unknown => {}
            }
        }
        if let Some(seq_text) = group(&mut self.matchers.seq, text) {
            let Ok(seq) = seq_text.parse::<u64>() else {
                tally.protocol_error(format!(
                    "script: `sequence.seq` took `{seq_text}` from a server message, which is not a whole number"
                ));
                return;
            };
            let key = group(&mut self.matchers.key, text).unwrap_or("");
            if let Some(check) = self.slot.sequence.as_mut() {
                let mut counts = MessageCounts::default();
                check.on_seq(key, seq, &mut counts);
                let c = &mut self.slot.counts;
                if !answered {
                    c.received += counts.received;
                }
                c.duplicated += counts.duplicated;
                c.reordered += counts.reordered;
            }
        }
    }

    /// Notes what a handshake message says of heartbeats.
    fn observe_handshake(&mut self, text: &str) {
        if let Some(t) = self.slot.run.profile.heartbeat_timeout(text) {
            self.heartbeat_timeout = Some(t);
        }
    }

    /// Renders and queues `template`; `tracked` messages are numbered,
    /// counted sent and (with `reply`) wait for their answer.
    fn send(&mut self, conn: u32, template: &Template, tracked: bool, now: Instant) {
        if tracked {
            self.slot.n += 1;
        }
        let vars = self.slot.vars(conn);
        let text = template.render(&vars, &mut self.scratch);
        if tracked {
            self.slot.counts.sent += 1;
            if let (Some(check), Some(id)) =
                (self.reply.as_mut(), group(&mut self.matchers.reply, &text))
            {
                check.sent(self.slot.run.ids.hash(id), now);
            }
        }
        self.frames.send(Message::Text(text.into()));
    }

    /// Why the service ended the connection, in its protocol's words. When
    /// it ends the session no sooner than its announced heartbeat timeout
    /// after a heartbeat the client answered, with none since, the answer
    /// did not reach it: that is its heartbeat timeout.
    fn describe_end(&self, how: String, now: Instant) -> String {
        let profile = self.slot.run.profile.name();
        let close = self
            .service_close
            .as_ref()
            .map(|c| format!(" (`{c}`)"))
            .unwrap_or_default();
        if let (Some(at), Some(limit)) = (self.last_heartbeat, self.heartbeat_timeout) {
            let after = now.saturating_duration_since(at);
            if after >= limit.mul_f64(0.9) {
                return format!(
                    "{profile}: heartbeat timeout on the service's side: it ended the session{close} {:.1} s after a heartbeat the client answered (it allows {:.1} s), so the answer did not reach it; {how}",
                    after.as_secs_f64(),
                    limit.as_secs_f64()
                );
            }
        }
        if self.service_close.is_some() {
            format!("{profile}: the service closed the session{close}; {how}")
        } else {
            how
        }
    }
}

/// Text of a server message, if it has any.
fn text_of(msg: &Message) -> Option<&str> {
    match msg {
        Message::Text(t) => Some(t.as_str()),
        Message::Binary(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// Runs one script-mode connection until it ends or the slot has drained.
pub(crate) async fn session(tally: &mut Tally, ws: Ws, slot: &mut ScriptSlot) -> SessionEnd {
    let run = slot.run.clone();
    let script = &run.script;
    if slot.connections > 0 && script.sequence.as_ref().is_some_and(|s| !s.resume) {
        if let Some(seq) = slot.sequence.as_mut() {
            seq.restart();
        }
    }
    slot.connections += 1;
    let (sink, mut stream) = ws.split();
    let (frames, writer) = FrameQueue::start(sink);
    let ctx = tally.ctx.clone();
    let conn_index = tally.id;
    let mut conn = Conn {
        slot,
        frames,
        matchers: Matchers::new(script),
        reply: script.reply.as_ref().map(|r| ReplyCheck::new(r.timeout)),
        scratch: String::new(),
        last_heartbeat: None,
        heartbeats_here: 0,
        service_close: None,
        heartbeat_timeout: None,
    };

    // The open steps, in order; other messages meanwhile go to the checks.
    for (i, step) in script.open.iter().enumerate() {
        match step {
            Step::Send(t) => conn.send(conn_index, t, false, Instant::now()),
            Step::Expect { pattern, timeout } => {
                let deadline = tokio::time::Instant::now() + *timeout;
                let failed = loop {
                    tokio::select! {
                        item = stream.next() => match item {
                            Some(Ok(msg)) => {
                                let Some(text) = text_of(&msg) else {
                                    if let Message::Close(frame) = &msg {
                                        break format!("script: open[{i}]: the server closed the connection ({}) while the client expected `{}`", describe_close(frame.as_ref()), pattern.as_str());
                                    }
                                    continue;
                                };
                                if pattern.is_match(text) {
                                    // Consumed by the step, not by the checks;
                                    // what it says of the protocol still counts.
                                    conn.observe_handshake(text);
                                    break String::new();
                                }
                                conn.on_message(tally, text, Instant::now());
                            }
                            Some(Err(err)) => break format!("script: open[{i}]: {} while the client expected `{}`", describe_ws_error(&err), pattern.as_str()),
                            None => break format!("script: open[{i}]: the connection ended while the client expected `{}`", pattern.as_str()),
                        },
                        _ = tokio::time::sleep_until(deadline) => break format!(
                            "script: open[{i}]: no server message matching `{}` within {}",
                            pattern.as_str(),
                            humantime::format_duration(*timeout)
                        ),
                        _ = ctx.hard_stop.cancelled() => {
                            writer.abort();
                            return SessionEnd::Finished;
                        }
                    }
                };
                if !failed.is_empty() {
                    writer.abort();
                    return SessionEnd::Failed(failed);
                }
            }
        }
    }
    tally.usable();

    let stop = tally.stop.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keepalive = run.profile.client_heartbeat();
    let mut next_keepalive = keepalive.map(|(every, _)| Instant::now() + every);
    let mut next_send = tokio::time::Instant::now() + initial_jitter(ctx.rate());
    let mut settled_since: Option<Instant> = None;
    let end = loop {
        let rate = ctx.rate();
        let draining = tally.draining();
        let sending = !draining && rate > 0.0 && script.send.is_some();
        tokio::select! {
            biased;
            item = stream.next() => {
                let now = Instant::now();
                match item {
                    Some(Ok(Message::Close(frame))) => {
                        if draining {
                            break SessionEnd::Finished;
                        }
                        let how = format!("the server closed the connection ({})", describe_close(frame.as_ref()));
                        break SessionEnd::Dropped(conn.describe_end(how, now));
                    }
                    Some(Ok(msg)) => {
                        if let Some(text) = text_of(&msg) {
                            conn.on_message(tally, text, now);
                        }
                    }
                    Some(Err(err)) => {
                        let how = describe_ws_error(&err);
                        break SessionEnd::Dropped(conn.describe_end(how, now));
                    }
                    None => {
                        let how = "the connection ended without a close frame".to_string();
                        break SessionEnd::Dropped(conn.describe_end(how, now));
                    }
                }
            }
            _ = tokio::time::sleep_until(next_send), if sending => {
                let now = tokio::time::Instant::now();
                if conn.frames.queued() < MAX_QUEUED {
                    if let Some(t) = &script.send {
                        conn.send(conn_index, t, true, now.into_std());
                    }
                }
                next_send += Duration::from_secs_f64(1.0 / rate);
                if next_send + Duration::from_secs(1) < now {
                    next_send = now;
                }
            }
            _ = stop.cancelled(), if !draining => tally.start_drain(),
            _ = ctx.hard_stop.cancelled() => break SessionEnd::Finished,
            _ = tick.tick() => {
                let now = Instant::now();
                if let Some(check) = conn.reply.as_mut() {
                    conn.slot.counts.lost += check.expire(now);
                }
                if let (Some((every, text)), Some(at)) = (keepalive, next_keepalive) {
                    if now >= at {
                        conn.frames.send(Message::Text(text.into()));
                        next_keepalive = Some(now + every);
                    }
                }
                if !sending {
                    next_send = tokio::time::Instant::now();
                }
                if tally.draining_over() {
                    break SessionEnd::Finished;
                }
                if tally.last_push.elapsed() >= LIVE_PUSH {
                    tally.push_live(&conn.slot.counts);
                }
            }
        }
        if tally.draining() {
            let settled = conn.reply.as_ref().is_none_or(ReplyCheck::settled);
            let now = Instant::now();
            match (settled, settled_since) {
                (true, None) => settled_since = Some(now),
                (true, Some(since)) if now.saturating_duration_since(since) >= LINGER => {
                    break SessionEnd::Finished
                }
                (false, _) => settled_since = None,
                _ => {}
            }
        }
    };
    if let Some(check) = conn.reply.as_mut() {
        conn.slot.counts.unconfirmed += check.cut();
    }
    let Conn { frames, .. } = conn;
    drop(frames);
    let sink = writer.await.ok().flatten();
    end_session(tally, &end, sink, stream).await;
    end
}
