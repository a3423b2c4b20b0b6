//! What to do after a failed download attempt: the installer's retry policy as a pure
//! decision.
//!
//! Owns: [`decide`], from the failure's facts ([`Failure`]) and what was tried so far
//! ([`RetryState`]), with delays from the charm's one backoff policy
//! ([`crate::storage_coordinator::Backoff`]).
//! Invariants: bytes that failed a digest or archive check are never resumed from again
//! (the partial is discarded); a failure after a resume is retried once from zero at
//! once (only the kept partial may have been bad), without spending a retry; only
//! transient failures spend retries, at most `retries` of them; a bad range response
//! restarts from zero.

use std::time::Duration;

use super::InstallError;
use crate::storage_coordinator::{Backoff, ErrorClass};

/// The facts about a failed attempt that the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The bytes are wrong (digest mismatch, unsafe or broken archive).
    pub bad_bytes: bool,
    /// The server's range response was unusable.
    pub bad_range: bool,
    /// Retrying may help ([`ErrorClass::Transient`]).
    pub transient: bool,
    /// The attempt resumed a kept partial (started past byte 0).
    pub resumed: bool,
}

impl Failure {
    pub(crate) fn of(e: &InstallError, resumed_from: u64) -> Failure {
        Failure {
            bad_bytes: matches!(e, InstallError::ChecksumMismatch { .. }) || e.is_content_error(),
            bad_range: matches!(e, InstallError::BadContentRange { .. }),
            transient: e.class() == ErrorClass::Transient,
            resumed: resumed_from > 0,
        }
    }
}

/// How many retries an install may spend, and the delays between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub retries: u32,
    pub backoff: Backoff,
}

/// What was tried so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RetryState {
    /// The one restart from zero after a failed resume was used.
    pub restarted: bool,
    /// Retries spent.
    pub retries: u32,
}

/// The next step after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try again at once, from byte 0.
    RestartFromZero,
    /// Retry `retry` of `of`, after `delay`; from byte 0 when the partial is unusable.
    Retry {
        retry: u32,
        of: u32,
        delay: Duration,
        from_zero: bool,
    },
    /// Report the error.
    GiveUp,
}

/// The decision: whether to discard the partial download, and what next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub discard_partial: bool,
    pub next: Next,
}

/// Decides what follows a failed attempt and records it in `state`.
pub(crate) fn decide(f: Failure, state: &mut RetryState, policy: &Policy) -> Decision {
    let discard_partial = f.bad_bytes;
    let next = if (f.bad_bytes || f.bad_range) && f.resumed && !state.restarted {
        state.restarted = true;
        Next::RestartFromZero
    } else if f.transient && state.retries < policy.retries {
        state.retries += 1;
        Next::Retry {
            retry: state.retries,
            of: policy.retries,
            delay: policy.backoff.delay(state.retries - 1),
            from_zero: f.bad_range,
        }
    } else {
        Next::GiveUp
    };
    Decision {
        discard_partial,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        retries: 2,
        backoff: Backoff::DOWNLOAD_RETRY,
    };

    fn failure() -> Failure {
        Failure {
            bad_bytes: false,
            bad_range: false,
            transient: false,
            resumed: false,
        }
    }

    fn retry(retry: u32, secs: u64, from_zero: bool) -> Next {
        Next::Retry {
            retry,
            of: 2,
            delay: Duration::from_secs(secs),
            from_zero,
        }
    }

    #[test]
    fn transient_failures_spend_retries_with_backoff_then_give_up() {
        let net = Failure {
            transient: true,
            resumed: true,
            ..failure()
        };
        let mut s = RetryState::default();
        let steps: Vec<Next> = (0..3).map(|_| decide(net, &mut s, &POLICY).next).collect();
        assert_eq!(
            steps,
            vec![retry(1, 2, false), retry(2, 4, false), Next::GiveUp]
        );
        assert!(
            !decide(net, &mut s, &POLICY).discard_partial,
            "resume later"
        );
    }

    #[test]
    fn permanent_failure_gives_up_at_once() {
        let mut s = RetryState::default();
        let d = decide(failure(), &mut s, &POLICY);
        assert_eq!(d.next, Next::GiveUp);
        assert_eq!(s, RetryState::default());
    }

    #[test]
    fn bad_bytes_after_a_resume_restart_once_from_zero_and_discard_the_partial() {
        let bad = Failure {
            bad_bytes: true,
            resumed: true,
            ..failure()
        };
        let mut s = RetryState::default();
        let d = decide(bad, &mut s, &POLICY);
        assert_eq!(
            d,
            Decision {
                discard_partial: true,
                next: Next::RestartFromZero
            }
        );
        assert_eq!(s.retries, 0, "the restart spends no retry");
        // The same failure again (now from zero) is reported.
        let again = Failure {
            resumed: false,
            ..bad
        };
        assert_eq!(
            decide(again, &mut s, &POLICY),
            Decision {
                discard_partial: true,
                next: Next::GiveUp
            }
        );
        // Bad bytes of a fresh download are never retried.
        let mut s = RetryState::default();
        assert_eq!(decide(again, &mut s, &POLICY).next, Next::GiveUp);
    }

    #[test]
    fn bad_range_restarts_from_zero() {
        let range = Failure {
            bad_range: true,
            transient: true,
            resumed: true,
            ..failure()
        };
        let mut s = RetryState::default();
        assert_eq!(decide(range, &mut s, &POLICY).next, Next::RestartFromZero);
        // Once restarted, a further bad range is a transient retry from zero.
        assert_eq!(decide(range, &mut s, &POLICY).next, retry(1, 2, true));
        let d = decide(range, &mut s, &POLICY);
        assert_eq!(d.next, retry(2, 4, true));
        assert!(!d.discard_partial);
    }

    #[test]
    fn facts_of_errors() {
        let mismatch = InstallError::ChecksumMismatch {
            file: "f".into(),
            origin: "o".into(),
            algorithm: "sha1",
            expected: "a".into(),
            actual: "b".into(),
            from_resource: false,
        };
        let f = Failure::of(&mismatch, 10);
        assert!(f.bad_bytes && f.resumed && !f.transient && !f.bad_range);
        let archive = InstallError::BadArchive {
            tarball: "t".into(),
            detail: "d".into(),
        };
        assert!(Failure::of(&archive, 0).bad_bytes);
        let range = InstallError::BadContentRange {
            url: "u".into(),
            detail: "d".into(),
        };
        let f = Failure::of(&range, 0);
        assert!(f.bad_range && f.transient && !f.resumed);
    }
}
