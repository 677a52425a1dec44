//! The pages behind every e-mail link: the invitation, "Forgot password?" and the reset link,
//! and what a used or forged link says.

use serde_json::json;

use super::{BrowserKeel, Person};
use crate::support::PASSWORD;

#[tokio::test]
async fn an_invited_owner_sets_a_password_through_the_mailed_link_and_signs_in() {
    let keel = BrowserKeel::start("an_invited_owner_sets_a_password_through_the_mailed_link").await;
    let (tenant_id, workspace, email) = keel.invited_owner("invite").await;
    let link = keel.mailed_link(&email, "/invitation").await;
    let person = Person { tenant_id, workspace, email, password: PASSWORD.to_string() };
    keel_tests::logs::secret(&person.password);
    keel.pass("invitation", json!({ "link": link, "person": person.params() })).await;

    // The password the page set is the account's: the JSON API signs in with it.
    let rest = crate::support::Rest::new(keel.keel.rest_addr);
    let (status, body) = rest.login(&person.email, &person.password, Some(&person.workspace)).await;
    assert_eq!(status, 200, "{body}");
    keel.keel.stop().await;
}

#[tokio::test]
async fn forgot_password_on_the_login_page_mails_a_link_whose_page_sets_a_new_password() {
    let keel = BrowserKeel::start("forgot_password_mails_a_link_whose_page_sets_a_new_password").await;
    let person = keel.person("reset").await;
    keel.pass("forgot_password", json!({ "person": person.params() })).await;
    let link = keel.mailed_link(&person.email, "/reset-password").await;
    let new_password = "a brand new passphrase for keel";
    keel_tests::logs::secret(new_password);
    keel.pass("reset_password", json!({ "link": link, "person": person.params(), "newPassword": new_password })).await;

    let rest = crate::support::Rest::new(keel.keel.rest_addr);
    let (status, _) = rest.login(&person.email, new_password, Some(&person.workspace)).await;
    assert_eq!(status, 200, "the new password is the account's");
    let (status, _) = rest.login(&person.email, &person.password, Some(&person.workspace)).await;
    assert_eq!(status, 401, "the old password is not");
    keel.keel.stop().await;
}
