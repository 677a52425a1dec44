//! The harness itself, on any Keel: Chromium opens Keel's discovery document, openid-client
//! discovers Keel as its issuer, and a failing scenario leaves a screenshot and the HTML.

use super::{BrowserKeel, output_dir};

#[tokio::test]
async fn chromium_and_openid_client_discover_keel_at_localhost() {
    let test = "chromium_and_openid_client_discover_keel_at_localhost";
    let keel = BrowserKeel::start(test).await;
    let result = keel.pass("smoke", serde_json::json!({})).await;
    assert_eq!(result["issuer"], keel.base.as_str(), "openid-client discovered Keel at http://localhost:<port>");
    assert!(result["keys"].as_u64().is_some_and(|n| n > 0), "the JWKS has keys: {result}");
    assert!(output_dir(test).join("discovery.png").exists(), "the smoke scenario keeps a screenshot");
    keel.keel.stop().await;
}

#[tokio::test]
async fn a_failing_browser_scenario_leaves_a_screenshot_and_the_html() {
    let test = "a_failing_browser_scenario_leaves_a_screenshot_and_the_html";
    let keel = BrowserKeel::start(test).await;
    let (passed, _, stderr) = keel.run("smoke", serde_json::json!({ "failOnPurpose": true })).await;
    assert!(!passed, "the scenario failed on purpose");
    assert!(stderr.contains("FAIL smoke: failing on purpose"), "a clear message: {stderr}");
    let kept: Vec<String> = std::fs::read_dir(output_dir(test))
        .expect("the test's output directory")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for extension in [".png", ".html"] {
        assert!(kept.iter().any(|f| f.starts_with("page") && f.ends_with(extension)), "a page{extension} in {kept:?}");
    }
    keel.keel.stop().await;
}
