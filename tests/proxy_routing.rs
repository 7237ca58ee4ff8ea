//! The dynamic proxy as a user meets it: containers on the host engine, `butler run`, requests
//! through the proxy's published port with a Host header. Real engine, real nginx, real apps.

mod support;

use std::path::Path;

use support::{AppContainer, ButlerProcess, unique_name};

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

#[test]
fn an_app_started_after_the_butler_is_routed_by_name() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("shop");
    let _app = AppContainer::builder(&name)
        .env("APP_NAME", "shop")
        .listen(3000)
        .expose(3000)
        .start();
    let response = butler.wait_for_app(&format!("{name}.localhost"));
    assert!(response.body.starts_with("app=shop "), "{}", response.body);
    assert!(response.body.contains("port=3000"), "{}", response.body);
    // Unknown hosts get the app directory, which lists the new app.
    let directory = butler.get("nobody.localhost", "/").unwrap();
    assert_eq!(directory.status, 200);
    assert!(
        directory.body.contains(&format!("http://{name}.localhost")),
        "{}",
        directory.body
    );
}
