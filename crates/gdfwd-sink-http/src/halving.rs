//! The order in which a refused batch is halved: a pure state machine, so the sender's loop only
//! sends what it is told and the search strategy is tested without HTTP.
//!
//! OpenPipeline refuses a whole request (400) for one invalid event, and a request too large
//! (413). The sender then halves the batch, level by level (breadth first), so the events it
//! refuses fail alone. While nothing of the range has been accepted and every part of a level at
//! quarter size or below was refused, the refusal may not be about particular events (a wrong
//! payload format, a pipeline change), or invalid events may sit in every part (every other event
//! invalid). Only single events can tell: the other parts are set aside and one part is halved
//! down to single events, two requests a level. If anything is accepted on the way, the parts set
//! aside come back and halving goes on to single events everywhere, each event decided for
//! itself. If everything down to single events is refused, the refusal is about the payload and
//! the parts set aside are refused without further requests: 1 + 2 + 4 requests, then 2 per level
//! below quarters (15 for 64 events, about 21 for 1000) instead of 2n - 1.

use std::collections::VecDeque;
use std::ops::Range;

use gdfwd_core::sink::EventOutcome;

use crate::request::halves;
use crate::retry::SplitCause;

/// What the sender does next for its range.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send this part, then report [`Halving::answered`] or [`Halving::split`].
    Send(Range<usize>),
    /// These parts were set aside and are refused without being sent, for `reason`.
    Refuse {
        parts: Vec<Range<usize>>,
        reason: String,
    },
    /// Every event of the range has its outcome.
    Done,
}

#[derive(Debug)]
pub(crate) struct Halving {
    /// Parts still to send, with their level: 0 is the planned batch, k its parts of 1/2^k.
    work: VecDeque<(Range<usize>, usize)>,
    /// Per level: parts tried, and parts refused (400 split or definitive failure).
    levels: Vec<(usize, usize)>,
    any_sent: bool,
    /// Parts set aside while one part is halved down to single events.
    parked: Vec<(Range<usize>, usize)>,
    /// Whether that probe ended without a verdict (then halving simply goes on).
    inconclusive: bool,
    /// The part last handed out by [`Halving::next`] and its level.
    current: (Range<usize>, usize),
}

impl Halving {
    pub(crate) fn new(range: Range<usize>) -> Self {
        Self {
            work: VecDeque::from([(range.clone(), 0)]),
            levels: Vec::new(),
            any_sent: false,
            parked: Vec::new(),
            inconclusive: false,
            current: (range.start..range.start, 0),
        }
    }

    pub(crate) fn next(&mut self) -> Step {
        loop {
            let (last_level, last_size) = (self.current.1, self.current.0.len());
            // Whether the next part starts a level deeper than the last one sent.
            let deeper = self
                .work
                .front()
                .is_some_and(|(_, level)| *level > last_level);
            let suspected = !self.any_sent
                && !self.inconclusive
                && deeper
                && self
                    .work
                    .front()
                    .is_some_and(|(_, level)| systemic_refusal(&self.levels, *level).is_some());
            if suspected {
                // Keep the first part and its sibling; set the rest aside.
                let keep = 2.min(self.work.len());
                self.parked.extend(self.work.drain(keep..));
            } else if !self.parked.is_empty() && (self.any_sent || deeper) {
                // Something was accepted, or a level was not refused as a whole: not systemic.
                self.unpark();
            }
            let Some((r, level)) = self.work.pop_front() else {
                if self.parked.is_empty() {
                    return Step::Done;
                }
                let all_refused = self
                    .levels
                    .get(last_level)
                    .is_some_and(|&(t, f)| t > 0 && t == f);
                if self.any_sent || !all_refused {
                    self.unpark();
                    continue;
                }
                return Step::Refuse {
                    parts: self.parked.drain(..).map(|(r, _)| r).collect(),
                    reason: format!(
                        "not sent: Dynatrace refused every part of this batch it was sent, down to parts of {last_size} event(s); the refusal is not about particular events"
                    ),
                };
            };
            if self.levels.len() <= level {
                self.levels.resize(level + 1, (0, 0));
            }
            self.levels[level].0 += 1;
            self.current = (r.clone(), level);
            return Step::Send(r);
        }
    }

    /// The part from [`Halving::next`] got one outcome for all its events.
    pub(crate) fn answered(&mut self, outcome: &EventOutcome) {
        match outcome {
            EventOutcome::Definitive { .. } => self.levels[self.current.1].1 += 1,
            EventOutcome::Sent { .. } => self.any_sent = true,
            EventOutcome::Retryable { .. } => {}
        }
    }

    /// The part from [`Halving::next`] must be sent again in halves.
    pub(crate) fn split(&mut self, cause: SplitCause) {
        let (r, level) = self.current.clone();
        if cause == SplitCause::Refused {
            self.levels[level].1 += 1;
        }
        let (a, b) = halves(&r);
        self.work.push_back((a, level + 1));
        self.work.push_back((b, level + 1));
    }

    fn unpark(&mut self) {
        self.inconclusive |= !self.any_sent;
        self.work.extend(self.parked.drain(..));
    }
}

/// The level whose parts were all refused, as the fraction's denominator (4 for quarters), when
/// that holds for a level of quarters or smaller: then a systemic refusal is suspected. Halves
/// alone are not enough: two invalid events, one in each half, refuse both.
fn systemic_refusal(levels: &[(usize, usize)], next: usize) -> Option<usize> {
    let last = next.checked_sub(1)?;
    let (tried, refused) = *levels.get(last)?;
    (last >= 2 && tried > 0 && refused == tried).then(|| 1usize << last.min(63))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the halving of `0..n` against a receiver that refuses any part holding an event
    /// `invalid` says is bad (a single bad event definitively); returns the requests made and,
    /// per event, whether it was accepted.
    fn run(n: usize, invalid: impl Fn(usize) -> bool) -> (usize, Vec<Option<bool>>) {
        let mut halving = Halving::new(0..n);
        let mut out = vec![None; n];
        let mut requests = 0;
        loop {
            match halving.next() {
                Step::Done => return (requests, out),
                Step::Refuse { parts, .. } => {
                    for r in parts {
                        out[r].fill(Some(false));
                    }
                }
                Step::Send(r) => {
                    requests += 1;
                    let bad = r.clone().any(&invalid);
                    if !bad {
                        halving.answered(&EventOutcome::Sent { request_id: None });
                        out[r].fill(Some(true));
                    } else if r.len() == 1 {
                        let refused = EventOutcome::Definitive {
                            reason: "400".into(),
                        };
                        halving.answered(&refused);
                        out[r].fill(Some(false));
                    } else {
                        halving.split(SplitCause::Refused);
                    }
                }
            }
        }
    }

    #[test]
    fn one_invalid_event_fails_alone() {
        let (requests, out) = run(16, |i| i == 5);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(*o, Some(i != 5), "event {i}");
        }
        // 1 + 2 per level down to the single event: 1 + 2 + 2 + 2 + 2.
        assert_eq!(requests, 9);
    }

    #[test]
    fn a_refusal_of_everything_costs_two_requests_a_level_below_quarters() {
        let (requests, out) = run(64, |_| true);
        assert!(out.iter().all(|o| *o == Some(false)));
        assert_eq!(requests, 15);
    }

    #[test]
    fn every_other_event_invalid_still_delivers_the_valid_ones() {
        let (_, out) = run(16, |i| i % 2 == 1);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(*o, Some(i % 2 == 0), "event {i}");
        }
    }

    #[test]
    fn an_accepted_batch_is_one_request() {
        assert_eq!(run(100, |_| false), (1, vec![Some(true); 100]));
    }

    #[test]
    fn a_too_large_batch_is_halved_without_counting_as_refused() {
        let mut halving = Halving::new(0..8);
        assert_eq!(halving.next(), Step::Send(0..8));
        halving.split(SplitCause::TooLarge);
        assert_eq!(halving.next(), Step::Send(0..4));
        halving.answered(&EventOutcome::Sent { request_id: None });
        assert_eq!(halving.next(), Step::Send(4..8));
        halving.answered(&EventOutcome::Sent { request_id: None });
        assert_eq!(halving.next(), Step::Done);
    }
}
