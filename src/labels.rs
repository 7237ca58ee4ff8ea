//! Every `butler.*` label key and environment variable the butler reads or writes on containers, the
//! deploy metadata those labels carry (`DeployLabels`), and the common web ports port choice falls
//! back on. A leaf: plain constants and data with no crate imports, so the proxy core, discovery,
//! health and deploy can all read the same names without importing one another.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `butler.enable=false` opts a container out of the proxy.
pub const LABEL_ENABLE: &str = "butler.enable";
/// The app name, instead of the container name; containers that share it are instances of one app.
pub const LABEL_NAME: &str = "butler.name";
/// Extra hosts, comma-separated.
pub const LABEL_HOST: &str = "butler.host";
/// The port the proxy sends traffic to.
pub const LABEL_PORT: &str = "butler.port";
/// Present on the butler's own containers (`butler.role=nginx`, ...): never routed.
pub const LABEL_ROLE: &str = "butler.role";
/// The label an app sets to let the butler restart its containers.
pub const LABEL_AUTORESTART: &str = "butler.autorestart";
/// Where the container's certificates come from: `auto`, `acme`, `local` or `off`, overriding
/// the config's `tls.mode` (`tls::policy` reads it).
pub const LABEL_TLS: &str = "butler.tls";
/// On the nginx container: the digest of the spec it was created from.
pub const LABEL_NGINX_SPEC: &str = "butler.nginx-spec";
/// On the butler's nginx container: the token its control port wants (see `nginx::data`).
pub const LABEL_NGINX_CONTROL: &str = "butler.nginx-control-token";

/// nginx-proxy's conventions, honoured for migration.
pub const ENV_VIRTUAL_HOST: &str = "VIRTUAL_HOST";
pub const ENV_VIRTUAL_PORT: &str = "VIRTUAL_PORT";

/// Every deploy label starts with this; users may not set such labels themselves (`--label`).
pub const LABEL_DEPLOY_PREFIX: &str = "butler.deploy.";
/// The deployment (store id) a container belongs to: the planner's health gate keys on it.
pub const LABEL_DEPLOY_ID: &str = "butler.deploy.id";
pub const LABEL_DEPLOY_APP: &str = "butler.deploy.app";
pub const LABEL_DEPLOY_REVISION: &str = "butler.deploy.revision";
/// `kind:identity`, e.g. `git:github.com/alice/shop`, as `deploy::naming::SourceId::label` writes it.
pub const LABEL_DEPLOY_SOURCE: &str = "butler.deploy.source";
pub const LABEL_DEPLOY_OWNER: &str = "butler.deploy.owner";
pub const LABEL_DEPLOY_REPO: &str = "butler.deploy.repo";
pub const LABEL_DEPLOY_INSTANCE: &str = "butler.deploy.instance";

/// Web ports in the order they are preferred when several candidates remain; discovery also
/// probes them, besides the exposed ones, when it cannot read a container's sockets.
pub const COMMON_WEB_PORTS: [u16; 5] = [80, 8080, 3000, 5000, 8000];

/// The deploy metadata of one container, as its labels carry it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeployLabels {
    /// The deployment's id in the store.
    pub deployment: String,
    pub app: String,
    pub revision: String,
    /// `kind:identity`, as `deploy::naming::SourceId::label` writes it.
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
}

impl DeployLabels {
    pub fn to_labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (LABEL_DEPLOY_ID.to_owned(), self.deployment.clone()),
            (LABEL_DEPLOY_APP.to_owned(), self.app.clone()),
            (LABEL_DEPLOY_REVISION.to_owned(), self.revision.clone()),
            (LABEL_DEPLOY_SOURCE.to_owned(), self.source.clone()),
        ]);
        let optional = [
            (LABEL_DEPLOY_OWNER, self.owner.clone()),
            (
                LABEL_DEPLOY_REPO,
                self.repo.clone().filter(|r| !r.is_empty()),
            ),
            (LABEL_DEPLOY_INSTANCE, self.instance.map(|n| n.to_string())),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                labels.insert(key.to_owned(), value);
            }
        }
        labels
    }

    /// The metadata of a container started by `butler deploy`; `None` for any other container.
    /// Labels are untrusted: the values are only shown, never rendered into a config.
    pub fn parse(labels: &BTreeMap<String, String>) -> Option<DeployLabels> {
        let get = |key: &str| labels.get(key).filter(|v| !v.is_empty()).cloned();
        Some(DeployLabels {
            deployment: get(LABEL_DEPLOY_ID)?,
            app: get(LABEL_DEPLOY_APP)?,
            revision: get(LABEL_DEPLOY_REVISION)?,
            source: get(LABEL_DEPLOY_SOURCE)?,
            owner: get(LABEL_DEPLOY_OWNER),
            repo: get(LABEL_DEPLOY_REPO),
            instance: get(LABEL_DEPLOY_INSTANCE).and_then(|n| n.parse().ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_foreign_containers_have_none() {
        let meta = DeployLabels {
            deployment: "7".into(),
            app: "alice-shop".into(),
            revision: "0123456789ab".into(),
            source: "git:github.com/alice/shop".into(),
            owner: Some("alice".into()),
            repo: Some("shop".into()),
            instance: Some(2),
        };
        let labels = meta.to_labels();
        assert_eq!(labels[LABEL_DEPLOY_SOURCE], "git:github.com/alice/shop");
        assert!(labels.keys().all(|k| k.starts_with(LABEL_DEPLOY_PREFIX)));
        assert_eq!(DeployLabels::parse(&labels), Some(meta.clone()));

        let mut partial = labels.clone();
        partial.remove(LABEL_DEPLOY_REVISION);
        assert_eq!(DeployLabels::parse(&partial), None);
        let mut bare = labels;
        bare.remove(LABEL_DEPLOY_OWNER);
        bare.insert(LABEL_DEPLOY_INSTANCE.into(), "x".into());
        let parsed = DeployLabels::parse(&bare).unwrap();
        assert_eq!((parsed.owner, parsed.instance), (None, None));
        assert_eq!(DeployLabels::parse(&BTreeMap::new()), None);
    }
}
