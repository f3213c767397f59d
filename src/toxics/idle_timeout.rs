//! `idle_timeout`: when no data frame passes in either direction for
//! `timeout` ms the connection is cut (abruptly, or with `close_code` sent to
//! both sides) — a load balancer that ignores pings unless
//! `count_control_frames` is true. Its stream does not matter.

use std::sync::Arc;
use std::time::Instant;

use super::api::{
    ms, CloseSpec, DeadlineCx, EndAction, InstanceCx, Item, ToxicCx, ToxicDef, ToxicState,
};
use super::attrs::{AttrError, Attributes};
use crate::vocab::CutMode;

#[derive(Debug)]
struct IdleTimeout {
    timeout: u64,
    count_control_frames: bool,
    close_code: Option<u16>,
}

/// Parses `timeout` (ms, ≥ 1, required), `count_control_frames` (default
/// false) and `close_code` (optional, 1000..=4999).
pub fn parse(attrs: &mut Attributes) -> Result<Arc<dyn ToxicDef>, AttrError> {
    let timeout = attrs.u64("timeout", 1..=86_400_000)?;
    let count_control_frames = attrs.bool_or("count_control_frames", false)?;
    let close_code = attrs.opt_u64("close_code", 1000..=4999)?.map(|c| c as u16);
    Ok(Arc::new(IdleTimeout {
        timeout,
        count_control_frames,
        close_code,
    }))
}

impl ToxicDef for IdleTimeout {
    fn acts_on_messages(&self) -> bool {
        false
    }
    fn instantiate(&self, cx: &InstanceCx) -> Box<dyn ToxicState> {
        Box::new(State {
            armed_at: cx.armed_at,
            timeout: self.timeout,
            control: self.count_control_frames,
            close_code: self.close_code,
            fired: false,
        })
    }
}

struct State {
    armed_at: Instant,
    timeout: u64,
    control: bool,
    close_code: Option<u16>,
    fired: bool,
}

impl State {
    fn due(&self, activity: &crate::vocab::Activity) -> Instant {
        activity.last(self.control).max(self.armed_at) + ms(self.timeout)
    }
}

impl ToxicState for State {
    fn next_deadline(&self, cx: &DeadlineCx<'_>) -> Option<Instant> {
        (!self.fired).then(|| self.due(cx.activity))
    }

    fn on_deadline(&mut self, cx: &mut ToxicCx<'_>) {
        if self.fired || self.due(cx.activity) > cx.now {
            return;
        }
        self.fired = true;
        cx.act();
        let end = match self.close_code {
            Some(code) => {
                let close = CloseSpec {
                    code,
                    reason: "idle timeout".into(),
                };
                EndAction::Close {
                    to_receiver: close.clone(),
                    to_sender: close,
                }
            }
            None => EndAction::Cut(CutMode::Fin),
        };
        cx.emit(Item::End(end));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::toxics::api::ms;
    use crate::toxics::testkit::{at, parse_error, Kit};

    #[test]
    fn data_moves_the_deadline_pings_do_not() {
        let mut kit = Kit::new("idle_timeout", json!({"timeout": 1000}), 1);
        assert_eq!(kit.next_deadline(0), Some(ms(1000)));
        kit.activity.touch(kit.t(600), true);
        assert_eq!(kit.next_deadline(600), Some(ms(1600)));
        assert!(
            kit.deadline(1000).is_empty(),
            "data at 600 ms kept it alive"
        );
        kit.activity.touch(kit.t(1500), false);
        assert_eq!(
            kit.next_deadline(1500),
            Some(ms(1600)),
            "a ping is not data"
        );
        assert!(kit.deadline(1599).is_empty());
        let out = kit.deadline(1600);
        assert_eq!(kit.log(&out), [at(1600, "cut:Fin")]);
        assert_eq!(kit.next_deadline(1600), None, "fires once");
        assert!(kit.deadline(5000).is_empty());
        assert_eq!(kit.actions, 1);
    }

    #[test]
    fn count_control_frames_lets_pings_keep_it_alive() {
        let mut kit = Kit::new(
            "idle_timeout",
            json!({"timeout": 1000, "count_control_frames": true}),
            1,
        );
        kit.activity.touch(kit.t(900), false);
        assert_eq!(kit.next_deadline(900), Some(ms(1900)));
        assert!(kit.deadline(1000).is_empty());
        let out = kit.deadline(1900);
        assert_eq!(kit.log(&out), [at(1900, "cut:Fin")]);
    }

    #[test]
    fn close_code_goes_to_both_sides() {
        let mut kit = Kit::new(
            "idle_timeout",
            json!({"timeout": 10, "close_code": 4000}),
            1,
        );
        let out = kit.deadline(10);
        assert_eq!(
            kit.log(&out),
            [at(10, "close:4000 'idle timeout' / 4000 'idle timeout'")]
        );
    }

    #[test]
    fn parse_errors_name_field_value_and_range() {
        assert_eq!(
            parse_error("idle_timeout", json!({"timeout": 10, "close_code": 999})),
            "idle_timeout attribute close_code=999 is invalid: valid range is integers 1000..=4999"
        );
        assert_eq!(
            parse_error("idle_timeout", json!({"timeout": 0})),
            "idle_timeout attribute timeout=0 is invalid: valid range is integers 1..=86400000"
        );
    }
}
