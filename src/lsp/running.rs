//! The suggestion being computed for each document, shared by the request that started it and
//! by the keystrokes that type along its text meanwhile: the generation keeps going instead of
//! restarting, and each waiting request takes the part after what its user typed.

use std::sync::{Arc, Weak};

use tokio::sync::watch;

use crate::completion::{Place, Recent, Suggestion};
use crate::engine::CancelToken;

/// What a running suggestion has produced: its raw text so far, then its outcome.
#[derive(Clone, Default)]
pub struct Progress {
    pub text: String,
    /// Once finished: the suggestion (`None` when cancelled), or what went wrong.
    pub outcome: Option<Outcome>,
    /// Requests that joined it: only the newest is answered.
    joined: u64,
}

pub type Outcome = Result<Option<Suggestion>, String>;

/// How waiting for a running suggestion ended.
#[derive(Debug, PartialEq)]
pub enum End {
    Finished(Outcome),
    /// Its text went another way than the user typed, or its generation is gone.
    Diverged,
    /// A newer request joined it; it answers instead.
    Superseded,
}

/// Cancels the generation once no request waits for it any more (the client cancelled them).
pub struct Waiters(CancelToken);

impl Drop for Waiters {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The suggestion being computed for a document.
pub struct Running {
    pub id: u64,
    /// The cursor it was asked at.
    pub place: Option<Place>,
    pub cancel: CancelToken,
    progress: Arc<watch::Sender<Progress>>,
    waiters: Weak<Waiters>,
}

/// A request's hold on a running suggestion: it keeps the generation alive.
pub struct Follow {
    /// The running suggestion's id.
    pub id: u64,
    progress: watch::Receiver<Progress>,
    /// Which join this is (0 for the request that started it).
    join: u64,
    _keep: Arc<Waiters>,
    /// What the user typed after the running suggestion's cursor ("" for the request that
    /// started it).
    pub typed: String,
}

impl Running {
    /// A new running suggestion, the sender its generation reports to, and the starting
    /// request's hold on it.
    pub fn new(
        id: u64,
        place: Option<Place>,
        cancel: CancelToken,
    ) -> (Running, Arc<watch::Sender<Progress>>, Follow) {
        let (tx, rx) = watch::channel(Progress::default());
        let tx = Arc::new(tx);
        let keep = Arc::new(Waiters(cancel.clone()));
        let running = Running {
            id,
            place,
            cancel,
            progress: tx.clone(),
            waiters: Arc::downgrade(&keep),
        };
        let follow = Follow {
            id,
            progress: rx,
            join: 0,
            _keep: keep,
            typed: String::new(),
        };
        (running, tx, follow)
    }

    /// A hold for a request whose user typed `typed` at this suggestion's cursor since, while
    /// the text so far may still start with it. Not before the first text: until then the
    /// prompt is still being computed, and a request of its own (which appends what was typed
    /// to that prompt) is no slower and never goes another way. The requests that joined
    /// before are answered with nothing.
    pub fn join(&self, typed: &str) -> Option<Follow> {
        {
            let progress = self.progress.borrow();
            if progress.outcome.is_some()
                || progress.text.is_empty()
                || !Recent::may_match(&progress.text, typed)
            {
                return None;
            }
        }
        let keep = self.waiters.upgrade()?;
        let mut join = 0;
        self.progress.send_modify(|p| {
            p.joined += 1;
            join = p.joined;
        });
        Some(Follow {
            id: self.id,
            progress: self.progress.subscribe(),
            join,
            _keep: keep,
            typed: typed.to_owned(),
        })
    }
}

impl Follow {
    /// Waits for the suggestion's outcome; ends early when its text leaves what was typed or a
    /// newer request joins.
    pub async fn end(&mut self) -> End {
        loop {
            {
                let progress = self.progress.borrow_and_update();
                if progress.joined > self.join {
                    return End::Superseded;
                }
                if let Some(outcome) = &progress.outcome {
                    return End::Finished(outcome.clone());
                }
                if !Recent::may_match(&progress.text, &self.typed) {
                    return End::Diverged;
                }
            }
            if self.progress.changed().await.is_err() {
                return End::Diverged;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::context::Mode;

    fn line(text: &str) -> Suggestion {
        Suggestion {
            text: text.into(),
            mode: Mode::Line,
        }
    }

    #[tokio::test]
    async fn followers_get_the_outcome_while_the_text_matches_what_they_typed() {
        let cancel = CancelToken::default();
        let (running, tx, mut asker) = Running::new(1, None, cancel.clone());
        tx.send_modify(|p| p.text.push_str("(x"));
        assert!(running.join("[").is_none(), "typed off the text so far");
        let mut along = running.join("(").unwrap();
        assert_eq!(asker.end().await, End::Superseded);
        tx.send_modify(|p| p.text.push_str(" + 1)"));
        tx.send_modify(|p| p.outcome = Some(Ok(Some(line("(x + 1)")))));
        assert_eq!(along.end().await, End::Finished(Ok(Some(line("(x + 1)")))));
        assert!(running.join("(").is_none(), "finished: nothing to wait for");
        assert!(!cancel.is_cancelled());
    }

    #[tokio::test]
    async fn a_follower_stops_waiting_when_the_text_goes_another_way() {
        let (running, tx, _asker) = Running::new(1, None, CancelToken::default());
        assert!(running.join("(y").is_none(), "no text yet");
        tx.send_modify(|p| p.text.push('('));
        let mut along = running.join("(y").unwrap();
        tx.send_modify(|p| p.text.push('x'));
        assert_eq!(along.end().await, End::Diverged);
    }

    #[test]
    fn the_generation_is_cancelled_when_nobody_waits() {
        let cancel = CancelToken::default();
        let (running, tx, asker) = Running::new(1, None, cancel.clone());
        tx.send_modify(|p| p.text.push('x'));
        let along = running.join("").unwrap();
        drop(asker);
        assert!(!cancel.is_cancelled());
        drop(along);
        assert!(cancel.is_cancelled());
        assert!(running.join("").is_none());
    }
}
