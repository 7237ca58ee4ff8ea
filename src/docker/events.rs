//! Engine events the proxy cares about, as a stream that survives the engine going away: it
//! reconnects with exponential backoff and emits `Resync` after every (re)connect, because events
//! may have been missed and the caller must re-list. `Coalescer` turns a burst into one trigger.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use futures_util::stream::{BoxStream, Stream, StreamExt};

use super::engine::{EngineError, EngineHandle};
use tokio::time::Instant;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Events are requested from a little before the (re)connect, so nothing between the caller's
/// re-list and the subscription is lost; a replayed duplicate only costs a coalesced reconcile.
const REPLAY_SECS: u64 = 2;

/// Container actions that change routes. `health_status` arrives as `health_status: healthy`.
/// `kill` changes no route, but a non-SIGKILL one says a stop may follow (see `StopMark`).
const CONTAINER_ACTIONS: [&str; 8] = [
    "create",
    "start",
    "die",
    "stop",
    "destroy",
    "rename",
    "health_status",
    "kill",
];
const NETWORK_ACTIONS: [&str; 2] = ["connect", "disconnect"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// The stream (re)connected: events may have been missed, list everything again.
    Resync,
    Container {
        /// `create`, `start`, `die`, `stop`, `destroy`, `rename` or `health_status: <status>`.
        action: String,
        id: String,
        /// The container's name when the engine reports it (after a rename: the new one).
        name: Option<String>,
        /// The signal of a `kill` event, as the engine reports it ("15").
        signal: Option<String>,
    },
    Network {
        /// `connect` or `disconnect`.
        action: String,
        network: String,
        /// The container that was (dis)connected.
        container: Option<String>,
    },
}

/// An endless stream of relevant events; it never ends and never fails: losing the engine means a
/// quiet period, then `Resync` once it answers again.
pub fn watch(docker: EngineHandle) -> impl Stream<Item = EngineEvent> + Send + 'static {
    struct State {
        docker: EngineHandle,
        inner: Option<BoxStream<'static, Result<EngineEvent, EngineError>>>,
        backoff: Duration,
        failed_before: bool,
    }
    let state = State {
        docker,
        inner: None,
        backoff: BACKOFF_START,
        failed_before: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            match state.inner.as_mut() {
                None => {
                    if state.failed_before {
                        tokio::time::sleep(state.backoff).await;
                        state.backoff = (state.backoff * 2).min(BACKOFF_MAX);
                    }
                    if let Err(e) = state.docker.ping().await {
                        tracing::warn!(error = %e, retry_in = ?state.backoff, "Docker engine not answering; will reconnect");
                        state.failed_before = true;
                        continue;
                    }
                    // From a little before now, so nothing between the caller's re-list and the
                    // subscription is lost.
                    let since = crate::clock::now_since_epoch()
                        .as_secs()
                        .saturating_sub(REPLAY_SECS);
                    state.inner = Some(state.docker.events(since));
                    return Some((EngineEvent::Resync, state));
                }
                Some(inner) => match inner.next().await {
                    Some(Ok(event)) => {
                        state.backoff = BACKOFF_START;
                        return Some((event, state));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "Docker event stream broke; reconnecting");
                        state.inner = None;
                        state.failed_before = true;
                    }
                    None => {
                        tracing::warn!("Docker event stream ended; reconnecting");
                        state.inner = None;
                        state.failed_before = true;
                    }
                },
            }
        }
    })
}

/// Maps an engine message to an event the proxy reacts to; `None` for the rest (exec_*, attach...).
pub fn relevant(message: &EventMessage) -> Option<EngineEvent> {
    let action = message.action.as_deref()?;
    let actor = message.actor.as_ref();
    let attribute = |key: &str| {
        actor
            .and_then(|a| a.attributes.as_ref())
            .and_then(|attrs| attrs.get(key))
            .cloned()
    };
    match message.typ? {
        EventMessageTypeEnum::CONTAINER => {
            let verb = action.split(':').next().unwrap_or(action).trim();
            if !CONTAINER_ACTIONS.contains(&verb) {
                return None;
            }
            Some(EngineEvent::Container {
                action: action.to_owned(),
                id: actor.and_then(|a| a.id.clone())?,
                name: attribute("name"),
                signal: attribute("signal"),
            })
        }
        EventMessageTypeEnum::NETWORK if NETWORK_ACTIONS.contains(&action) => {
            Some(EngineEvent::Network {
                action: action.to_owned(),
                network: attribute("name").or_else(|| actor.and_then(|a| a.id.clone()))?,
                container: attribute("container"),
            })
        }
        _ => None,
    }
}

/// What a burst of events amounts to: one reconcile, full when any `Resync` was in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub resync: bool,
    /// Containers named by the events (ids), for a targeted re-inspect.
    pub containers: BTreeSet<String>,
    /// The names of those containers, where the engine reported them.
    pub names: BTreeSet<String>,
    /// How many events were folded into this batch.
    pub events: usize,
    /// Container id → what the batch's last event about it says of a user stopping it.
    pub user_stops: BTreeMap<String, StopMark>,
    /// Containers just created (not started yet): connected to the proxy network before their
    /// `start`, so that they start on it (see `Reconciler::connect_created`).
    pub created: BTreeSet<String>,
}

/// What the engine's events tell of a container being stopped on purpose. `docker stop` sends
/// `kill` (SIGTERM, or the image's stop signal), then `die`, then `stop`; `docker kill` sends
/// `kill` with SIGKILL and `die`; a crash sends `die` alone. So a `stop` means a user stopped
/// it, whatever the exit code (an app that ignores SIGTERM is SIGKILLed after the timeout, exit
/// 137, like a crash), and a gentle `kill` means a `stop` may be on its way: only then is an
/// exit's verdict worth a moment's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMark {
    /// A `kill` with another signal than SIGKILL: a `docker stop` may be under way.
    Requested,
    /// A `stop` event: a user stopped it.
    Stopped,
    /// It started again or was removed: whatever was marked is over.
    Cleared,
}

impl StopMark {
    pub fn as_str(self) -> &'static str {
        match self {
            StopMark::Requested => "requested",
            StopMark::Stopped => "stopped",
            StopMark::Cleared => "cleared",
        }
    }
}

impl Batch {
    /// Nothing but `create` events so far.
    fn only_creates(&self) -> bool {
        !self.resync && self.containers.is_empty() && self.created.len() == self.events
    }

    fn add(&mut self, event: EngineEvent) {
        self.events += 1;
        match event {
            EngineEvent::Resync => self.resync = true,
            EngineEvent::Container {
                id,
                name,
                action,
                signal,
            } => {
                let mark = match action.as_str() {
                    // A created container has no route yet; its `start` follows.
                    "create" => {
                        self.created.insert(id);
                        return;
                    }
                    "kill" => {
                        let sigkill = matches!(signal.as_deref(), Some("9" | "SIGKILL" | "KILL"));
                        if !sigkill {
                            self.user_stops.insert(id, StopMark::Requested);
                        }
                        // A kill changes no route: the `die` that follows does.
                        return;
                    }
                    "stop" => Some(StopMark::Stopped),
                    "start" | "destroy" => Some(StopMark::Cleared),
                    _ => None,
                };
                if let Some(mark) = mark {
                    self.user_stops.insert(id.clone(), mark);
                }
                self.containers.insert(id);
                self.names.extend(name);
            }
            EngineEvent::Network { container, .. } => self.containers.extend(container),
        }
    }
}

/// Debounce with a cap: a batch fires after `quiet` without events, but never later than
/// `max_delay` after its first event, so a steady trickle still reconciles regularly. A lone change
/// after an idle spell (one `docker run` is a network connect and a start, a few ms apart) fires
/// after the much shorter `lone_quiet`: the route should be live before the app is, and waiting
/// out a burst that is not coming would cost most of that time.
#[derive(Debug, Clone)]
pub struct Coalescer {
    quiet: Duration,
    max_delay: Duration,
    lone_quiet: Duration,
    /// How long the stream must have been without batches for the next one to count as lone.
    idle: Duration,
    last_batch: Option<Instant>,
    /// The burst being gathered. It lives here, not in `next_batch`'s future, because callers
    /// race that future in a `select!`: when another branch wins, a burst held by the dropped
    /// future (a reconnect's `Resync` among it) would be lost until the next periodic round.
    pending: Option<Pending>,
}

#[derive(Debug, Clone)]
struct Pending {
    batch: Batch,
    last_event: Instant,
    cap: Instant,
    after_idle: bool,
}

/// At most this many events still count as one lone change.
const LONE_EVENTS: usize = 3;

impl Default for Coalescer {
    /// 150 ms of quiet closes a burst, 1 s caps it, and a lone change after 500 ms without one
    /// fires after 25 ms. Measured (`cargo bench --bench proxy`, idle machine): the butler's own
    /// reaction to a lone start, event to reconcile done, fell from 510 to 392 ms (p50), and a
    /// burst of 50 still took 3 reloads.
    fn default() -> Self {
        Self::new(Duration::from_millis(150), Duration::from_secs(1))
            .with_lone_quiet(Duration::from_millis(25))
    }
}

/// On the data path a reconcile costs a PUT, not a reload: bursts need not be gathered for long,
/// and a lone change waits only for the events `docker run` sends within a few milliseconds.
pub const DATA_PATH_QUIET: Duration = Duration::from_millis(25);
pub const DATA_PATH_MAX_DELAY: Duration = Duration::from_millis(250);
pub const DATA_PATH_LONE_QUIET: Duration = Duration::from_millis(5);

impl Coalescer {
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Self {
            quiet,
            max_delay,
            // No fast path unless asked for (`with_lone_quiet`).
            lone_quiet: quiet,
            idle: Duration::from_millis(500),
            last_batch: None,
            pending: None,
        }
    }

    /// A lone change after an idle spell fires after `lone_quiet` instead of `quiet`.
    pub fn with_lone_quiet(mut self, lone_quiet: Duration) -> Self {
        self.lone_quiet = lone_quiet;
        self
    }

    /// Waits for the next event, then gathers the burst that follows it. `None` when the stream ended.
    ///
    /// Cancel-safe: dropped mid-burst, the next call carries on with the same burst.
    pub async fn next_batch<S>(&mut self, events: &mut S) -> Option<Batch>
    where
        S: Stream<Item = EngineEvent> + Unpin,
    {
        if self.pending.is_none() {
            let event = events.next().await?;
            let first = Instant::now();
            let mut batch = Batch::default();
            batch.add(event);
            self.pending = Some(Pending {
                batch,
                last_event: first,
                cap: first + self.max_delay,
                after_idle: self
                    .last_batch
                    .is_none_or(|last| first.duration_since(last) >= self.idle),
            });
        }
        loop {
            let pending = self.pending.as_mut()?;
            let quiet = if pending.batch.only_creates() {
                // Answered at once: the container should be on the proxy network before the
                // `start` that follows a create within milliseconds (see `Batch::created`).
                Duration::ZERO
            } else if pending.after_idle && pending.batch.events <= LONE_EVENTS {
                self.lone_quiet
            } else {
                self.quiet
            };
            let deadline = (pending.last_event + quiet).min(pending.cap);
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(Some(event)) => {
                    let pending = self.pending.as_mut()?;
                    pending.batch.add(event);
                    pending.last_event = Instant::now();
                }
                Ok(None) | Err(_) => break,
            }
        }
        let batch = self.pending.take().map(|pending| pending.batch)?;
        // A batch that reconciles nothing (a `create` before its `start`, a `kill` before its
        // `die`) does not end an idle spell: the `start` that follows is still a lone change.
        if batch.resync || !batch.containers.is_empty() {
            self.last_batch = Some(Instant::now());
        }
        Some(batch)
    }

    pub fn quiet(&self) -> Duration {
        self.quiet
    }

    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    pub fn lone_quiet(&self) -> Duration {
        self.lone_quiet
    }

    /// Changes the windows of the bursts to come (the one being gathered keeps its cap).
    pub fn tune(&mut self, quiet: Duration, max_delay: Duration, lone_quiet: Duration) {
        self.quiet = quiet;
        self.max_delay = max_delay;
        self.lone_quiet = lone_quiet.min(quiet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;
    use tokio_stream_shim::ReceiverStream;

    /// A minimal `Stream` over an mpsc receiver, to avoid a dependency for tests.
    mod tokio_stream_shim {
        use std::pin::Pin;
        use std::task::{Context, Poll};

        pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);

        impl<T> futures_util::Stream for ReceiverStream<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.0.poll_recv(cx)
            }
        }
    }

    fn start(id: &str) -> EngineEvent {
        EngineEvent::Container {
            action: "start".into(),
            id: id.into(),
            name: None,
            signal: None,
        }
    }

    #[test]
    fn a_batch_remembers_who_a_user_stopped() {
        let event = |action: &str, id: &str, signal: Option<&str>| EngineEvent::Container {
            action: action.into(),
            id: id.into(),
            name: None,
            signal: signal.map(str::to_owned),
        };
        let mut batch = Batch::default();
        // docker stop: kill 15, die, stop. docker restart: the same, then start. docker kill:
        // kill 9, die. A stop under way: kill 15 only so far. A crash: die.
        for (action, id, signal) in [
            ("kill", "stopped", Some("15")),
            ("die", "stopped", None),
            ("stop", "stopped", None),
            ("kill", "restarted", Some("15")),
            ("die", "restarted", None),
            ("stop", "restarted", None),
            ("start", "restarted", None),
            ("kill", "killed", Some("9")),
            ("die", "killed", None),
            ("kill", "stopping", Some("15")),
            ("die", "crashed", None),
        ] {
            batch.add(event(action, id, signal));
        }
        assert_eq!(
            batch.user_stops,
            BTreeMap::from([
                ("restarted".into(), StopMark::Cleared),
                ("stopped".into(), StopMark::Stopped),
                ("stopping".into(), StopMark::Requested),
            ])
        );
        // Kill events alone name no container to re-inspect: they change no route.
        assert!(!batch.containers.contains("stopping"));
        assert!(batch.containers.contains("killed"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_fifty_is_one_batch() {
        let (tx, rx) = mpsc::channel(100);
        tokio::spawn(async move {
            for i in 0..50 {
                tx.send(start(&format!("c{i}"))).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // keep the sender alive past the quiet period
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let mut events = ReceiverStream(rx);
        let began = Instant::now();
        let batch = Coalescer::default().next_batch(&mut events).await.unwrap();
        assert_eq!(batch.events, 50);
        assert_eq!(batch.containers.len(), 50);
        assert!(!batch.resync);
        // last event at ~490 ms, then 150 ms of quiet
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(640) && took < Duration::from_millis(700),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_is_cut_at_the_max_delay() {
        let (tx, rx) = mpsc::channel(1000);
        tokio::spawn(async move {
            for i in 0..300 {
                if tx.send(start(&format!("c{i}"))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut events = ReceiverStream(rx);
        let mut coalescer = Coalescer::default().with_lone_quiet(Duration::from_millis(25));
        let lone = coalescer.next_batch(&mut events).await.unwrap();
        assert_eq!(
            lone.events, 1,
            "the first event after an idle spell goes alone"
        );
        let began = Instant::now();
        let first = coalescer.next_batch(&mut events).await.unwrap();
        // The batch's first event came 75 ms after the lone one returned; the cap counts from it.
        assert!(
            began.elapsed() <= Duration::from_millis(1075),
            "{:?}",
            began.elapsed()
        );
        assert!(first.events >= 10 && first.events <= 11, "{first:?}");
        let second = coalescer.next_batch(&mut events).await.unwrap();
        assert!(second.events >= 9, "{second:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_event_fires_after_the_quiet_period() {
        let (tx, rx) = mpsc::channel(10);
        tx.send(EngineEvent::Resync).await.unwrap();
        let mut events = ReceiverStream(rx);
        let began = Instant::now();
        let mut coalescer = Coalescer::default().with_lone_quiet(Duration::from_millis(25));
        let batch = coalescer.next_batch(&mut events).await.unwrap();
        assert!(batch.resync);
        assert_eq!(batch.events, 1);
        assert_eq!(
            began.elapsed(),
            Duration::from_millis(25),
            "a lone event is not held back"
        );

        // Right after a batch, the next event waits the full quiet period for company.
        tx.send(start("c1")).await.unwrap();
        let began = Instant::now();
        coalescer.next_batch(&mut events).await.unwrap();
        assert_eq!(began.elapsed(), Duration::from_millis(150));
        drop(tx);
        assert_eq!(coalescer.next_batch(&mut events).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_before_its_start_leaves_the_start_a_lone_change() {
        let (tx, rx) = mpsc::channel(10);
        let mut events = ReceiverStream(rx);
        let mut coalescer = Coalescer::default();
        tx.send(EngineEvent::Container {
            action: "create".into(),
            id: "c1".into(),
            name: Some("c1".into()),
            signal: None,
        })
        .await
        .unwrap();
        let began = Instant::now();
        let created = coalescer.next_batch(&mut events).await.unwrap();
        assert_eq!(
            began.elapsed(),
            Duration::ZERO,
            "a create is answered at once"
        );
        assert_eq!(created.created, BTreeSet::from(["c1".to_owned()]));
        assert!(
            created.containers.is_empty(),
            "a create alone reconciles nothing"
        );

        tx.send(start("c1")).await.unwrap();
        let began = Instant::now();
        let started = coalescer.next_batch(&mut events).await.unwrap();
        assert_eq!(started.containers, BTreeSet::from(["c1".to_owned()]));
        assert_eq!(
            began.elapsed(),
            Duration::from_millis(25),
            "the start after a create is still a lone change"
        );

        // Tuned for the data path, a burst closes after 25 ms of quiet.
        coalescer.tune(DATA_PATH_QUIET, DATA_PATH_MAX_DELAY, DATA_PATH_LONE_QUIET);
        tx.send(start("c2")).await.unwrap();
        let began = Instant::now();
        coalescer.next_batch(&mut events).await.unwrap();
        assert_eq!(began.elapsed(), DATA_PATH_QUIET);
    }

    /// The workers race `next_batch` against their timers in a `select!`; a timer winning
    /// mid-burst must not lose the burst (CI once lost a reconnect's `Resync` this way).
    #[tokio::test(start_paused = true)]
    async fn a_burst_survives_the_gathering_future_being_dropped() {
        let (tx, rx) = mpsc::channel(10);
        let mut events = ReceiverStream(rx);
        let mut coalescer = Coalescer::new(Duration::from_millis(150), Duration::from_secs(1));
        tx.send(EngineEvent::Resync).await.unwrap();
        tx.send(start("c1")).await.unwrap();
        tokio::select! {
            _ = coalescer.next_batch(&mut events) => panic!("the quiet period has not passed"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        tx.send(start("c2")).await.unwrap();
        let began = Instant::now();
        let batch = coalescer.next_batch(&mut events).await.unwrap();
        assert!(batch.resync, "the Resync gathered before the drop is kept");
        assert_eq!(batch.events, 3);
        assert_eq!(batch.containers.len(), 2);
        assert_eq!(began.elapsed(), Duration::from_millis(150));
    }

    #[test]
    fn a_batch_keeps_the_names_the_engine_reported() {
        let mut batch = Batch::default();
        batch.add(EngineEvent::Container {
            action: "die".into(),
            id: "abc".into(),
            name: Some("butler-nginx".into()),
            signal: None,
        });
        batch.add(start("def"));
        assert_eq!(batch.containers.len(), 2);
        assert_eq!(batch.names, BTreeSet::from(["butler-nginx".to_owned()]));
    }

    #[test]
    fn exec_events_are_ignored_and_health_is_kept() {
        use bollard::models::EventActor;
        use std::collections::HashMap;
        let message = |action: &str| EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(HashMap::from([("name".into(), "web".into())])),
            }),
            ..Default::default()
        };
        assert_eq!(relevant(&message("exec_start: nginx -t")), None);
        assert!(matches!(
            relevant(&message("health_status: unhealthy")),
            Some(EngineEvent::Container { ref id, .. }) if id == "abc"
        ));
    }
}
