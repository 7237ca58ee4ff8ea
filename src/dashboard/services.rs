//! The butler's units as systemd sees them, read through the supervisor (reading unit properties
//! needs no privilege). On a host without systemd, or under `butler run`, the answer says so
//! instead of failing. Results are cached briefly: a page and a scrape in the same second ask once.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::view::ServicesView;
use crate::systemd::supervisor::{Bus, Supervisor};

const CACHE_FOR: Duration = Duration::from_secs(2);
/// Upper bound for one look at systemd, so a stuck bus cannot hold a page.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Default)]
pub struct Services {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    supervisor: Option<Supervisor>,
    cached: Option<(Instant, ServicesView)>,
}

impl Services {
    pub async fn view(&self) -> ServicesView {
        let mut state = self.state.lock().await;
        if let Some((at, view)) = &state.cached
            && at.elapsed() < CACHE_FOR
        {
            return view.clone();
        }
        let view = match tokio::time::timeout(ASK_TIMEOUT, ask(&mut state)).await {
            Ok(view) => view,
            Err(_) => {
                state.supervisor = None;
                unavailable(format!(
                    "systemd did not answer within {}",
                    humantime::format_duration(ASK_TIMEOUT)
                ))
            }
        };
        state.cached = Some((Instant::now(), view.clone()));
        view
    }
}

async fn ask(state: &mut State) -> ServicesView {
    if !sd_notify::booted().unwrap_or(false) {
        return unavailable(
            "this host is not running systemd, so there are no butler units: the workers run in \
             one process (`butler run`)"
                .into(),
        );
    }
    if state.supervisor.is_none() {
        match Supervisor::connect(Bus::System).await {
            Ok(supervisor) => state.supervisor = Some(supervisor),
            Err(error) => return unavailable(error.to_string()),
        }
    }
    let Some(supervisor) = &state.supervisor else {
        return unavailable("no connection to systemd".into());
    };
    match supervisor.list().await {
        Ok(units) if units.iter().all(|u| u.load_state == "not-found") => unavailable(
            "systemd runs here, but the butler's units are not installed: the workers run in one \
             process (`butler run`)"
                .into(),
        ),
        Ok(units) => ServicesView {
            available: true,
            reason: None,
            units,
        },
        Err(error) => {
            state.supervisor = None;
            unavailable(error.to_string())
        }
    }
}

fn unavailable(reason: String) -> ServicesView {
    ServicesView {
        available: false,
        reason: Some(reason),
        units: Vec::new(),
    }
}
