//! The data path's edge: whether the image has nginx's Lua module (the shipped image does, the
//! official one does not), and replacing the routes data a running nginx routes by, with a `PUT`
//! to its control port on the proxy network. The port is not published; the token every request
//! carries was made when the container was created, is kept in the container's labels (readable
//! by whoever can reach the Docker API, which is root on the host anyway) and in a file nginx
//! reads at start, outside every config version.

use std::time::Duration;

use super::*;
use crate::labels::LABEL_NGINX_CONTROL;

/// The Lua module of Debian's `libnginx-mod-http-lua`, which the rendered nginx.conf loads.
pub const LUA_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_lua_module.so";
/// How long one update may take: the text is parsed in microseconds; a slower answer means
/// nginx is not there.
const PUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// What a running nginx said to new routes data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPush {
    /// Every worker routes by it from its next request.
    Accepted,
    /// The Lua side refused it (its words); the data nginx had keeps serving.
    Refused(String),
    /// This container cannot take data now (no control token, no address, not listening): the
    /// caller applies the whole tree with a reload instead.
    Unavailable(String),
}

impl Nginx {
    /// Whether the running container's image has the Lua module, learned once per container.
    /// `running` is the container's id when the caller has just seen it (then no inspect).
    pub async fn has_data_path(&self, running: Option<&str>) -> Result<bool, NginxError> {
        let id = match running {
            Some(id) => id.to_owned(),
            None => match self.inspect().await? {
                Some(info) => info.id,
                None => return Ok(false),
            },
        };
        {
            let known = self.data_path.lock().expect("not poisoned");
            if let Some((known_id, yes)) = known.as_ref()
                && *known_id == id
            {
                return Ok(*yes);
            }
        }
        let found = self
            .docker
            .link_target(&id, LUA_MODULE)
            .await
            .map_err(self.docker_err("stat"))?
            .is_some();
        *self.data_path.lock().expect("not poisoned") = Some((id, found));
        Ok(found)
    }

    /// Replaces the routes data of the running nginx with `text` (a `routes_data` text).
    pub async fn push_routes(&self, text: &str) -> Result<DataPush, NginxError> {
        let Some(info) = self.inspect().await? else {
            return Ok(DataPush::Unavailable(
                "the nginx container is missing".into(),
            ));
        };
        let Some(token) = info.labels.get(LABEL_NGINX_CONTROL) else {
            return Ok(DataPush::Unavailable(
                "the nginx container was created without a control token".into(),
            ));
        };
        let Some(ip) = info.networks.get(&self.spec.network) else {
            return Ok(DataPush::Unavailable(format!(
                "nginx has no address on network {}",
                self.spec.network
            )));
        };
        let addr = SocketAddr::new(*ip, CONTROL_PORT);
        let headers = [("X-Butler-Token", token.as_str())];
        let put = crate::http::put_text(
            addr,
            "butler-control",
            CONTROL_PATH,
            &headers,
            text.as_bytes(),
        );
        let answer = match tokio::time::timeout(PUSH_TIMEOUT, put).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Ok(DataPush::Unavailable(format!("control port {addr}: {e}"))),
            Err(_) => {
                return Ok(DataPush::Unavailable(format!(
                    "control port {addr}: no answer within {PUSH_TIMEOUT:?}"
                )));
            }
        };
        let body = answer.body().trim().to_owned();
        Ok(match answer.status_text() {
            "200" => DataPush::Accepted,
            "400" => DataPush::Refused(body),
            other => DataPush::Unavailable(format!("control port {addr} answered {other}: {body}")),
        })
    }

    /// A new control token for a container about to be created: 128 random bits, hex.
    pub(super) fn new_control_token() -> Result<String, NginxError> {
        use std::io::Read as _;
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(NginxError::Archive)?;
        Ok(hex::encode(bytes))
    }
}
