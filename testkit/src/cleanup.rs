//! `Cleanup`: removes what a test made on the engine (containers, labelled containers, images,
//! networks) when it drops, also while the test panics.

use crate::docker::remove_network;
use crate::unique::test_label;
use crate::{docker, docker_ok, unique_name};

/// Removes the containers and networks registered with it when dropped, also while a test panics.
/// Declare it before the things it cleans so that it drops after them.
#[derive(Default)]
pub struct Cleanup {
    containers: Vec<String>,
    labelled: Vec<String>,
    images: Vec<String>,
    image_repos: Vec<String>,
    networks: Vec<String>,
}

impl Cleanup {
    pub fn new() -> Cleanup {
        Cleanup::default()
    }
    /// Remove this container (name or id) at drop.
    pub fn add_container(&mut self, name: &str) {
        self.containers.push(name.to_string());
    }
    /// Remove every container carrying this label (`key=value`) at drop: the ones a butler under
    /// test started for the test, whose names the test may not know.
    pub fn add_labelled(&mut self, label: &str) {
        self.labelled.push(label.to_string());
    }
    /// Remove this image (tag or id) at drop, after the containers.
    pub fn add_image(&mut self, image: &str) {
        self.images.push(image.to_string());
    }
    /// Remove every image of this repository (`butler-deploy/<app>`, all tags) at drop: the ones a
    /// butler under test built for the test.
    pub fn add_image_repo(&mut self, repo: &str) {
        self.image_repos.push(repo.to_string());
    }
    /// Remove this network at drop (after the containers; others still attached are disconnected).
    pub fn add_network(&mut self, name: &str) {
        self.networks.push(name.to_string());
    }
    /// Create a labelled bridge network with a unique name from `prefix`, removed at drop.
    pub fn create_network(&mut self, prefix: &str) -> String {
        let name = unique_name(prefix);
        docker_ok(&["network", "create", "--label", &test_label(), &name]);
        self.add_network(&name);
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_containers(&self.containers);
        for label in &self.labelled {
            let out = docker(&["ps", "-aq", "--filter", &format!("label={label}")]);
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            remove_containers(&ids);
        }
        let mut images = self.images.clone();
        for repo in &self.image_repos {
            let out = docker(&["images", "-q", "--no-trunc", repo]);
            images.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
        if !images.is_empty() {
            images.sort();
            images.dedup();
            let mut args = vec!["rmi", "-f"];
            args.extend(images.iter().map(String::as_str));
            let _ = docker(&args);
        }
        for net in self.networks.iter().rev() {
            remove_network(net);
        }
    }
}

fn remove_containers(names: &[String]) {
    if names.is_empty() {
        return;
    }
    let mut args = vec!["rm", "-f", "-v"];
    args.extend(names.iter().map(String::as_str));
    let _ = docker(&args);
}
