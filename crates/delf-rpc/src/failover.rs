//! Calling one of several equivalent endpoints (the replicas of a shard, the workers, the coordinators), with the
//! rules written once:
//!
//! - endpoints are tried one after another, starting at the one the caller names (a rotating start spreads load);
//! - each try gets [`Policy::per_try`], capped by what is left before the call's deadline;
//! - with [`Policy::hedge_after`], the next endpoint is asked as well when the current one has not answered by
//!   then, and the first good answer wins (idempotent reads only: a hedged write would be sent twice);
//! - what a failure means is the [`Retry`] rule's: reads try the next endpoint after anything but the caller's own
//!   fault; writes only after UNAVAILABLE, which says the request reached no state machine, unless the writes are
//!   [`Retry::IdempotentWrite`]s, whose repetition the receiver makes harmless;
//! - [`Policy::rounds`] passes over the endpoints, with a growing pause between passes (a coordinator without a
//!   leader yet answers again after an election).
//!
//! Callers map a status to an [`Attempt`] with [`Retry::classify`] (or decide themselves, e.g. when an answer
//! arrives but does not check out), and get the first answer or every endpoint's error.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tonic::{Code, Status};

/// How one try on one endpoint ended.
#[derive(Debug)]
pub enum Attempt<T> {
    /// It answered.
    Answer(T),
    /// It failed in a way the next endpoint, or a later pass, may not; the reason goes into the error message.
    Failed(String),
    /// Stop at once: the request itself is at fault, or a write may have been applied.
    Stop(Status),
}

/// Which failures are tried again on another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Idempotent reads (searches, extraction, verification, state reads): anything but the caller's own fault
    /// (INVALID_ARGUMENT, FAILED_PRECONDITION, UNAUTHENTICATED, PERMISSION_DENIED), which every endpoint would
    /// answer the same way.
    Read,
    /// Writes whose repetition the receiver makes harmless (the metadata commands: registering what is already
    /// registered, activating the active version, ... answer "already" and change nothing): retried like reads,
    /// including after a timeout that may have come after the write was applied. Never hedged.
    IdempotentWrite,
    /// Other writes: retried only after UNAVAILABLE (no connection, no leader), which says the request reached no
    /// state machine. A timeout or an internal error may come after the write was applied, so it stops the call.
    Write,
}

impl Retry {
    /// What `s`, returned by an endpoint after waiting at most `waited`, means under this rule.
    pub fn classify<T>(self, s: Status, waited: Duration) -> Attempt<T> {
        let callers_fault = matches!(
            s.code(),
            Code::InvalidArgument | Code::FailedPrecondition | Code::Unauthenticated | Code::PermissionDenied
        );
        match self {
            _ if callers_fault => Attempt::Stop(s),
            Retry::Write if s.code() != Code::Unavailable => Attempt::Stop(s),
            _ => Attempt::Failed(describe(&s, waited)),
        }
    }

    /// How a plain gRPC call ended: its answer, or its status [`classified`](Self::classify).
    pub fn judge<T>(self, result: Result<tonic::Response<T>, Status>, waited: Duration) -> Attempt<T> {
        match result {
            Ok(r) => Attempt::Answer(r.into_inner()),
            Err(s) => self.classify(s, waited),
        }
    }
}

/// What went wrong with a call that got `s` after waiting at most `t`. Tonic enforces the `grpc-timeout` it sends
/// as a local CANCELLED, the server as DEADLINE_EXCEEDED: both mean the peer did not answer in time.
pub fn describe(s: &Status, t: Duration) -> String {
    let timed_out =
        s.code() == Code::DeadlineExceeded || (s.code() == Code::Cancelled && s.message().contains("Timeout"));
    if timed_out {
        format!("no answer within {} ms", t.as_millis())
    } else {
        format!("{:?}: {}", s.code(), s.message())
    }
}

/// The rules of one kind of call.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Longest wait for one endpoint's answer (capped by what is left before the deadline).
    pub per_try: Duration,
    /// Ask the next endpoint as well when the current one has not answered after this long. Only for
    /// [`Retry::Read`]: [`Policy::check`] refuses it for writes.
    pub hedge_after: Option<Duration>,
    /// Passes over all endpoints (at least 1).
    pub rounds: u32,
    /// Pause after pass `r` (from 1): `r` times this, at most 5 times.
    pub backoff: Duration,
    /// Which failures try the next endpoint.
    pub retry: Retry,
}

impl Policy {
    /// One pass, no hedging, no pause: each endpoint tried at most once.
    pub fn once(per_try: Duration, retry: Retry) -> Self {
        Self { per_try, hedge_after: None, rounds: 1, backoff: Duration::ZERO, retry }
    }

    /// Refuses hedged writes (a hedge sends the request twice).
    pub fn check(&self) -> Result<(), Status> {
        if self.hedge_after.is_some() && self.retry != Retry::Read {
            return Err(Status::internal("only idempotent reads may be hedged"));
        }
        Ok(())
    }
}

/// Why no endpoint answered.
#[derive(Debug)]
pub enum Failure {
    /// An endpoint answered with a status that ends the call ([`Attempt::Stop`]).
    Stopped(Status),
    /// Every try failed, or the deadline left no time for one: `(endpoint, what went wrong last)`, the endpoint
    /// that failed last at the end.
    Exhausted {
        /// Each failed try.
        errors: Vec<(String, String)>,
        /// Whether the deadline passed before every try could be made.
        deadline_passed: bool,
    },
}

impl Failure {
    /// What went wrong, one line per endpoint (`addr: error`), and a last line when the deadline passed.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Failure::Stopped(s) => vec![s.message().to_string()],
            Failure::Exhausted { errors, deadline_passed } => {
                let mut lines: Vec<String> = errors.iter().map(|(a, e)| format!("{a}: {e}")).collect();
                if *deadline_passed {
                    lines.push("the others: not tried, the deadline passed".into());
                }
                lines
            }
        }
    }

    /// [`Failure::lines`] as one line: `addr: error; addr: error`.
    pub fn summary(&self) -> String {
        self.lines().join("; ")
    }
}

/// An endpoint that failover can name in its errors.
pub trait Endpoint {
    /// Its address, as errors and logs show it.
    fn addr(&self) -> &str;
}

impl Endpoint for String {
    fn addr(&self) -> &str {
        self
    }
}

/// What [`call`] tells its observer (for logs and metrics).
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A try failed (and another endpoint, or a later pass, comes next if any is left).
    Failed(&'a str),
    /// The endpoint is asked because the one before it was slow.
    Hedged,
}

/// Calls `call(endpoint, time)` on `endpoints` under `policy`, starting at `first` (taken modulo their number),
/// until one answers or `deadline` passes; `observe` sees each failed try and each hedged request.
pub async fn call<E, T, F, Fut>(
    endpoints: &[E],
    first: usize,
    deadline: Instant,
    policy: &Policy,
    observe: impl Fn(&E, Event<'_>),
    call: F,
) -> Result<T, Failure>
where
    E: Endpoint,
    F: Fn(&E, Duration) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    policy.check().map_err(Failure::Stopped)?;
    let n = endpoints.len();
    let mut errors = Vec::new();
    let left = || deadline.saturating_duration_since(Instant::now());
    let call = &call;
    let attempt = |i: usize, t: Duration| async move {
        let outcome = match tokio::time::timeout(t, call(&endpoints[i], t)).await {
            Ok(outcome) => outcome,
            Err(_) => Attempt::Failed(format!("no answer within {} ms", t.as_millis())),
        };
        (i, outcome)
    };
    for round in 1..=policy.rounds.max(1) {
        let mut running = FuturesUnordered::new();
        let mut next = 0;
        loop {
            // Start the next endpoint when none is running (first try, or after a failure).
            while running.is_empty() && next < n {
                let i = (first + next) % n;
                next += 1;
                let t = left().min(policy.per_try);
                if t.is_zero() {
                    return Err(Failure::Exhausted { errors, deadline_passed: true });
                }
                running.push(attempt(i, t));
            }
            if running.is_empty() {
                break;
            }
            let hedge_now = async {
                match policy.hedge_after {
                    Some(h) if next < n => tokio::time::sleep(h).await,
                    _ => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                Some((i, outcome)) = running.next() => match outcome {
                    Attempt::Answer(answer) => return Ok(answer),
                    Attempt::Stop(s) => return Err(Failure::Stopped(s)),
                    Attempt::Failed(error) => {
                        observe(&endpoints[i], Event::Failed(&error));
                        // Over several passes, each endpoint's latest error is the one worth reading.
                        let addr = endpoints[i].addr();
                        errors.retain(|(a, _): &(String, String)| a != addr);
                        errors.push((addr.to_string(), error));
                    }
                },
                () = hedge_now => {
                    let i = (first + next) % n;
                    next += 1;
                    let t = left().min(policy.per_try);
                    if !t.is_zero() {
                        observe(&endpoints[i], Event::Hedged);
                        running.push(attempt(i, t));
                    }
                }
            }
        }
        if round < policy.rounds {
            let pause = policy.backoff * round.min(5);
            if left() <= pause {
                return Err(Failure::Exhausted { errors, deadline_passed: true });
            }
            tokio::time::sleep(pause).await;
        }
    }
    Err(Failure::Exhausted { errors, deadline_passed: false })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Endpoints scripted per try: each answers from its list, in order (the last entry repeats).
    struct Script(Vec<Vec<(u64, Result<u32, Status>)>>, Mutex<Vec<usize>>);

    impl Script {
        fn new(plan: Vec<Vec<(u64, Result<u32, Status>)>>) -> Self {
            let n = plan.len();
            Self(plan, Mutex::new(vec![0; n]))
        }

        async fn run(&self, i: usize, retry: Retry, t: Duration) -> Attempt<u32> {
            let step = {
                let mut tries = self.1.lock().unwrap();
                let k = tries[i].min(self.0[i].len() - 1);
                tries[i] += 1;
                self.0[i][k].clone()
            };
            tokio::time::sleep(Duration::from_millis(step.0)).await;
            match step.1 {
                Ok(v) => Attempt::Answer(v),
                Err(s) => retry.classify(s, t),
            }
        }

        fn tries(&self) -> Vec<usize> {
            self.1.lock().unwrap().clone()
        }
    }

    async fn run(script: &Script, first: usize, policy: Policy, within: Duration) -> Result<u32, Failure> {
        let ids: Vec<String> = (0..script.0.len()).map(|i| format!("e{i}")).collect();
        let deadline = Instant::now() + within;
        call(&ids, first, deadline, &policy, |_, _| {}, |e, t| script.run(e[1..].parse().unwrap(), policy.retry, t))
            .await
    }

    fn read(per_try_ms: u64) -> Policy {
        Policy::once(Duration::from_millis(per_try_ms), Retry::Read)
    }

    #[tokio::test]
    async fn the_next_endpoint_answers_after_a_failure_or_a_timeout() {
        let s = Script::new(vec![vec![(0, Err(Status::unavailable("down")))], vec![(500, Ok(1))], vec![(0, Ok(2))]]);
        assert_eq!(run(&s, 0, read(100), Duration::from_secs(5)).await.unwrap(), 2);
        assert_eq!(s.tries(), vec![1, 1, 1]);
        // Starting elsewhere: the rotation.
        let s = Script::new(vec![vec![(0, Ok(0))], vec![(0, Ok(1))]]);
        assert_eq!(run(&s, 3, read(100), Duration::from_secs(5)).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn the_callers_fault_stops_at_once_and_writes_stop_after_a_timeout() {
        let s = Script::new(vec![vec![(0, Err(Status::invalid_argument("bad")))], vec![(0, Ok(1))]]);
        assert!(matches!(run(&s, 0, read(100), Duration::from_secs(5)).await, Err(Failure::Stopped(_))));
        assert_eq!(s.tries(), vec![1, 0]);

        let plan = || vec![vec![(0, Err(Status::deadline_exceeded("slow")))], vec![(0, Ok(1))]];
        let write = Policy::once(Duration::from_millis(100), Retry::Write);
        let s = Script::new(plan());
        assert!(matches!(run(&s, 0, write, Duration::from_secs(5)).await, Err(Failure::Stopped(_))));
        let idempotent = Policy { retry: Retry::IdempotentWrite, ..write };
        assert_eq!(run(&Script::new(plan()), 0, idempotent, Duration::from_secs(5)).await.unwrap(), 1);
        // UNAVAILABLE: the write reached no one, so the next endpoint gets it.
        let s = Script::new(vec![vec![(0, Err(Status::unavailable("no leader")))], vec![(0, Ok(1))]]);
        assert_eq!(run(&s, 0, write, Duration::from_secs(5)).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_slow_endpoint_is_hedged_and_the_first_answer_wins() {
        let s = Script::new(vec![vec![(1000, Ok(0))], vec![(50, Ok(1))]]);
        let hedged = Policy { hedge_after: Some(Duration::from_millis(100)), ..read(5000) };
        let started = Instant::now();
        assert_eq!(run(&s, 0, hedged, Duration::from_secs(5)).await.unwrap(), 1);
        assert!(started.elapsed() < Duration::from_millis(900), "the hedge answered first");
        let write = Policy { retry: Retry::IdempotentWrite, ..hedged };
        assert!(matches!(run(&s, 0, write, Duration::from_secs(5)).await, Err(Failure::Stopped(_))));
    }

    #[tokio::test]
    async fn rounds_retry_until_the_deadline_and_the_error_names_every_try() {
        // Both down twice, then the second answers: three passes needed.
        let down = || (0, Err(Status::unavailable("no leader")));
        let s = Script::new(vec![vec![down()], vec![down(), down(), (0, Ok(7))]]);
        let rounds = Policy { rounds: 10, backoff: Duration::from_millis(100), ..read(1000) };
        assert_eq!(run(&s, 0, rounds, Duration::from_secs(5)).await.unwrap(), 7);
        assert_eq!(s.tries(), vec![3, 3]);

        let s = Script::new(vec![vec![down()], vec![down()]]);
        let Err(f @ Failure::Exhausted { deadline_passed: true, .. }) =
            run(&s, 0, rounds, Duration::from_millis(250)).await
        else {
            panic!("expected the deadline to end the call")
        };
        assert!(f.summary().starts_with("e0: Unavailable: no leader; e1: Unavailable: no leader"), "{}", f.summary());
        let Err(f) = run(&Script::new(vec![vec![down()]]), 0, read(100), Duration::from_secs(1)).await else {
            panic!("expected a failure")
        };
        assert!(matches!(f, Failure::Exhausted { deadline_passed: false, ref errors } if errors.len() == 1));
        // No endpoint at all: nothing to try.
        let none: Vec<String> = Vec::new();
        let soon = Instant::now() + Duration::from_secs(1);
        let r: Result<u32, _> = call(&none, 0, soon, &read(10), |_, _| {}, |_, _| async { Attempt::Answer(0) }).await;
        assert!(matches!(r, Err(Failure::Exhausted { ref errors, .. }) if errors.is_empty()));
    }
}
