//! Resume mode: drives one connection of a slot's [`ResumeState`] — reads
//! the server's messages, runs the send-rate and 100 ms timers, and turns
//! the machine's [`Action`]s into frames (through a writer task, so a slow
//! socket never stalls reading).
//!
//! The protocol logic (gaps, replays, resends, exactly-once accounting) is
//! all in [`super::resume_state`]; this file only moves bytes and time.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio_tungstenite::tungstenite::Message;

use super::resume_state::{Action, ResumeState};
use super::session::{
    describe_close, describe_ws_error, end_session, initial_jitter, snippet, FrameQueue,
    SessionEnd, Tally, Ws, LIVE_PUSH,
};
use crate::resume_wire::{Body, ClientMsg, ServerMsg, WireError};

/// How long the first `welcome` may take.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for the writer before new sends are skipped.
const MAX_QUEUED: usize = 1024;
const TICK: Duration = Duration::from_millis(100);

/// Turns actions into frames for the writer task.
struct Outbox {
    frames: FrameQueue,
    /// The body being sent (reused: one allocation per message, the frame).
    body: String,
}

impl Outbox {
    fn send(&mut self, text: String) {
        self.frames.send(Message::Text(text.into()));
    }

    /// Sends the frames of `actions` and records their latencies; empties it.
    fn apply(&mut self, rs: &ResumeState, actions: &mut Vec<Action>, tally: &mut Tally) {
        for action in actions.drain(..) {
            match action {
                Action::Hello { ack } => {
                    let hello = ClientMsg::Hello {
                        session: Some(Cow::Borrowed(rs.session())),
                        ack,
                    };
                    self.send(hello.to_text());
                }
                Action::Msg { cseq } => {
                    rs.write_body(cseq, &mut self.body);
                    let msg = ClientMsg::Msg {
                        cseq,
                        body: Some(Body::Text(Cow::Borrowed(&self.body))),
                    };
                    let text = msg.to_text();
                    self.send(text);
                }
                Action::Latency { us } => tally.record_latency(us),
            }
        }
    }
}

/// Runs one resume-mode connection until it ends or the slot has drained.
pub(crate) async fn session(tally: &mut Tally, ws: Ws, rs: &mut ResumeState) -> SessionEnd {
    let (sink, mut stream) = ws.split();
    let (frames, writer) = FrameQueue::start(sink);
    let mut out = Outbox {
        frames,
        body: String::new(),
    };
    let mut actions = Vec::new();
    rs.connected(Instant::now(), &mut actions);
    out.apply(rs, &mut actions, tally);
    let ctx = tally.ctx.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // The first message must be the welcome; the machine asks again if the
    // hello or the welcome is lost.
    let welcome_deadline = tokio::time::Instant::now() + WELCOME_TIMEOUT;
    let failed = loop {
        tokio::select! {
            item = stream.next() => match item {
                // Control frames may come first (an intermediary's
                // interleaved pings); tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(msg)) => {
                    let next = match &msg {
                        Message::Text(t) => match ServerMsg::parse(t.as_str()) {
                            Ok(ServerMsg::Welcome { next, .. }) => Some(next),
                            _ => None,
                        },
                        _ => None,
                    };
                    let Some(next) = next else {
                        break format!(
                            "resume mode: the server does not speak the resume protocol: expected a welcome, got {}",
                            snippet(&msg)
                        );
                    };
                    rs.on_welcome(next, Instant::now(), &mut actions);
                    tally.usable();
                    out.apply(rs, &mut actions, tally);
                    break String::new();
                }
                Some(Err(err)) => break format!("resume mode: {} before the welcome", describe_ws_error(&err)),
                None => break "resume mode: the connection ended before the welcome".into(),
            },
            _ = tick.tick() => {
                if tokio::time::Instant::now() >= welcome_deadline {
                    break format!(
                        "resume mode: no welcome from {} within 10 s of the hello (does the server speak the resume protocol?)",
                        ctx.url
                    );
                }
                rs.tick(Instant::now(), &mut actions);
                out.apply(rs, &mut actions, tally);
            }
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

    let stop = tally.stop.clone();
    let mut next_send = tokio::time::Instant::now() + initial_jitter(ctx.rate());
    let end = loop {
        let rate = ctx.rate();
        let draining = tally.draining();
        let sending = !draining && rate > 0.0;
        tokio::select! {
            biased;
            item = stream.next() => match item {
                Some(Ok(Message::Text(text))) => {
                    on_text(tally, rs, text.as_str(), &mut actions);
                    out.apply(rs, &mut actions, tally);
                }
                Some(Ok(Message::Binary(_))) => {
                    tally.protocol_error("resume mode: the server sent a binary message".into());
                }
                Some(Ok(Message::Close(frame))) => {
                    if draining && rs.settled() {
                        break SessionEnd::Finished;
                    }
                    break SessionEnd::Dropped(format!("the server closed the connection ({})", describe_close(frame.as_ref())));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => break SessionEnd::Dropped(describe_ws_error(&err)),
                None => break SessionEnd::Dropped("the connection ended without a close frame".into()),
            },
            _ = tokio::time::sleep_until(next_send), if sending => {
                let now = tokio::time::Instant::now();
                if out.frames.queued() < MAX_QUEUED {
                    rs.send_new(now.into_std(), &mut actions);
                    out.apply(rs, &mut actions, tally);
                }
                next_send += Duration::from_secs_f64(1.0 / rate);
                if next_send + Duration::from_secs(1) < now {
                    next_send = now;
                }
            }
            _ = stop.cancelled(), if !draining => tally.start_drain(),
            _ = ctx.hard_stop.cancelled() => break SessionEnd::Finished,
            _ = tick.tick() => {
                if tally.draining_over() {
                    break SessionEnd::Finished;
                }
                if !sending {
                    next_send = tokio::time::Instant::now();
                }
                rs.tick(Instant::now(), &mut actions);
                out.apply(rs, &mut actions, tally);
                if tally.last_push.elapsed() >= LIVE_PUSH {
                    tally.push_live(rs.counts());
                }
            }
        }
        if tally.draining() && rs.settled() {
            break SessionEnd::Finished;
        }
    };
    drop(out);
    let sink = writer.await.ok().flatten();
    end_session(tally, &end, sink, stream).await;
    end
}

/// One text message from the server, after the welcome.
fn on_text(tally: &mut Tally, rs: &mut ResumeState, text: &str, actions: &mut Vec<Action>) {
    let now = Instant::now();
    match ServerMsg::parse(text) {
        Ok(ServerMsg::Echo { seq, cseq, body }) => {
            rs.on_echo(seq, cseq, body.as_ref(), now, actions)
        }
        Ok(ServerMsg::Welcome { next, .. }) => {
            rs.on_welcome(next, now, actions);
        }
        Ok(ServerMsg::Error { error }) => tally.protocol_error(format!(
            "resume mode: the server reported an error: {error}"
        )),
        Err(WireError::Missing { .. }) => {
            tally.protocol_error("resume mode: an echo without seq or cseq".into())
        }
        Err(WireError::UnknownType(other)) => tally.protocol_error(format!(
            "resume mode: unexpected message type `{other}` from the server"
        )),
        Err(WireError::Json(_)) => {
            let shown: String = text.chars().take(80).collect();
            tally.protocol_error(format!(
                "resume mode: the server sent a message that is not resume-protocol JSON: `{shown}`"
            ))
        }
    }
}
