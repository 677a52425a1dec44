//! Issue 14's end-to-end proof: a stock relying-party library (openid-client v6) signs a person
//! in through Keel's real pages in headless Chromium, a second app signs the same person in
//! silently, and RP-initiated logout ends both.

use serde_json::json;

use super::{BrowserKeel, free_port};

#[tokio::test]
async fn a_stock_oidc_client_signs_in_through_the_pages_and_a_second_app_rides_the_keel_session() {
    let keel = BrowserKeel::start("a_stock_oidc_client_signs_in_through_the_pages").await;
    let person = keel.person("rp").await;
    let rp_port = free_port();
    let rp = format!("http://localhost:{rp_port}");
    let app = |name: &str, confidential: bool| {
        let (redirect, logged_out) = (format!("{rp}/{name}/callback"), format!("{rp}/{name}/logged-out"));
        let client = keel.register_client(
            name,
            std::slice::from_ref(&redirect),
            std::slice::from_ref(&logged_out),
            confidential,
        );
        json!({
            "clientId": client.client_id,
            "clientSecret": client.client_secret,
            "redirectUri": redirect,
            "postLogoutRedirectUri": logged_out,
        })
    };
    let apps = [app("first", false), app("second", true)];
    let result =
        keel.pass("relying_party", json!({ "person": person.params(), "rpPort": rp_port, "apps": apps })).await;
    assert_eq!(result["tid"], person.tenant_id.as_str(), "the ID token names the person's tenant: {result}");
    assert_eq!((&result["silent"], &result["signedOut"]), (&json!(true), &json!(true)), "{result}");

    keel.keel.stop().await;
}
