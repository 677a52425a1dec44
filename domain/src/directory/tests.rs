//! Given events, when a command, then events (or an error).

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use uuid::Uuid;

use super::*;
use crate::error::{DomainError, ErrorKind};
use crate::ids::UserId;

type Given = TestFramework<Directory>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn day(n: i64) -> DateTime<Utc> {
    t0() + Duration::days(n)
}

fn uid(n: u8) -> UserId {
    format!("usr_01jd00000000000000000000{n:02}").parse().unwrap()
}

fn cred(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// A token with this hash that expires `days` after t0.
fn token(hash: &str, days: i64) -> PendingToken {
    PendingToken { hash: hash.into(), expires_at: day(days) }
}

fn invited(n: u8, email: &str, role: UserRole) -> DirectoryEvent {
    DirectoryEvent::Invited {
        user_id: uid(n),
        email: email.into(),
        role,
        invitation: token(&format!("inv{n}"), 7),
        invited_at: t0(),
    }
}

fn accepted(n: u8) -> DirectoryEvent {
    DirectoryEvent::InvitationAccepted { user_id: uid(n), credential_id: cred(n.into()), accepted_at: day(1) }
}

/// An owner (user 1) who accepted the invitation.
fn owner() -> Vec<DirectoryEvent> {
    vec![invited(1, "owner@acme.io", UserRole::Owner), accepted(1)]
}

/// The owner (1) plus an active admin (2) and an active user (3).
fn team() -> Vec<DirectoryEvent> {
    let mut events = owner();
    events.extend([
        invited(2, "admin@acme.io", UserRole::Admin),
        accepted(2),
        invited(3, "user@acme.io", UserRole::User),
        accepted(3),
    ]);
    events
}

/// The team plus a second active owner (4).
fn two_owners() -> Vec<DirectoryEvent> {
    let mut events = team();
    events.extend([invited(4, "second@acme.io", UserRole::Owner), accepted(4)]);
    events
}

fn disabled(n: u8) -> DirectoryEvent {
    DirectoryEvent::Disabled { user_id: uid(n) }
}

fn invite(n: u8, email: &str, role: UserRole) -> DirectoryCommand {
    DirectoryCommand::Invite {
        user_id: uid(n),
        email: email.into(),
        role,
        invitation: token(&format!("inv{n}"), 7),
        at: t0(),
    }
}

fn invite_owner(n: u8, email: &str) -> DirectoryCommand {
    DirectoryCommand::InviteOwner {
        user_id: uid(n),
        email: email.into(),
        invitation: token(&format!("inv{n}"), 7),
        at: t0(),
    }
}

fn accept(hash: &str, at: DateTime<Utc>) -> DirectoryCommand {
    DirectoryCommand::AcceptInvitation { token_hash: hash.into(), credential_id: cred(99), at }
}

fn request_reset(n: u8, hash: &str) -> DirectoryEvent {
    DirectoryEvent::PasswordResetRequested { user_id: uid(n), reset: token(hash, 3) }
}

fn reset(hash: &str, at: DateTime<Utc>) -> DirectoryCommand {
    DirectoryCommand::ResetPassword { token_hash: hash.into(), credential_id: cred(77), at }
}

fn change_role(n: u8, role: UserRole, acting: Acting) -> DirectoryCommand {
    DirectoryCommand::ChangeRole { user_id: uid(n), role, acting }
}

fn state(events: Vec<DirectoryEvent>) -> Directory {
    let mut directory = Directory::default();
    for event in events {
        directory.apply(event);
    }
    directory
}

// Invitations.

#[test]
fn invites_an_admin_or_a_user() {
    for role in [UserRole::Admin, UserRole::User] {
        Given::with(()).given(owner()).when(invite(2, "ann@acme.io", role)).then_expect_events(vec![invited(
            2,
            "ann@acme.io",
            role,
        )]);
    }
}

#[test]
fn e_mails_are_unique_case_insensitively() {
    Given::with(())
        .given(team())
        .when(invite(5, "Admin@ACME.io", UserRole::User))
        .then_expect_error(DirectoryError::EmailTaken);
    Given::with(())
        .given(team())
        .when(invite(5, "admin@acme.io", UserRole::User))
        .then_expect_error(DirectoryError::EmailTaken);
}

#[test]
fn a_user_id_cannot_be_reused() {
    Given::with(())
        .given(team())
        .when(invite(2, "new@acme.io", UserRole::User))
        .then_expect_error(DirectoryError::UserExists);
}

#[test]
fn invite_gives_only_admin_or_user() {
    for role in [UserRole::Owner, UserRole::Operator, UserRole::Auditor] {
        Given::with(())
            .given(owner())
            .when(invite(2, "ann@acme.io", role))
            .then_expect_error(DirectoryError::InvalidRole);
    }
}

#[test]
fn tokens_must_expire_after_the_command() {
    let expired = token("x", 0);
    Given::with(())
        .given(owner())
        .when(DirectoryCommand::Invite {
            user_id: uid(2),
            email: "ann@acme.io".into(),
            role: UserRole::User,
            invitation: expired.clone(),
            at: t0(),
        })
        .then_expect_error(DirectoryError::InvalidExpiry);
    Given::with(())
        .given_no_previous_events()
        .when(DirectoryCommand::InviteOwner {
            user_id: uid(1),
            email: "owner@acme.io".into(),
            invitation: token("x", -1),
            at: t0(),
        })
        .then_expect_error(DirectoryError::InvalidExpiry);
    Given::with(())
        .given(vec![invited(2, "ann@acme.io", UserRole::User)])
        .when(DirectoryCommand::ResendInvitation { user_id: uid(2), invitation: expired.clone(), at: t0() })
        .then_expect_error(DirectoryError::InvalidExpiry);
    Given::with(())
        .given(owner())
        .when(DirectoryCommand::RequestPasswordReset { user_id: uid(1), reset: expired, at: t0() })
        .then_expect_error(DirectoryError::InvalidExpiry);
}

#[test]
fn provisioning_invites_the_first_owner() {
    Given::with(())
        .given_no_previous_events()
        .when(invite_owner(1, "owner@acme.io"))
        .then_expect_events(vec![invited(1, "owner@acme.io", UserRole::Owner)]);
}

#[test]
fn inviting_the_same_owner_again_is_a_no_op() {
    // A provisioning retry, invited or accepted already, even with a fresh id or another case.
    Given::with(())
        .given(vec![invited(1, "owner@acme.io", UserRole::Owner)])
        .when(invite_owner(1, "owner@acme.io"))
        .then_expect_events(vec![]);
    Given::with(()).given(owner()).when(invite_owner(9, "OWNER@acme.io")).then_expect_events(vec![]);
}

#[test]
fn only_one_owner_is_invited_by_provisioning() {
    Given::with(())
        .given(owner())
        .when(invite_owner(5, "other@acme.io"))
        .then_expect_error(DirectoryError::OwnerExists);
    // A disabled owner still counts.
    let mut events = two_owners();
    events.push(disabled(4));
    Given::with(()).given(events).when(invite_owner(5, "other@acme.io")).then_expect_error(DirectoryError::OwnerExists);
}

#[test]
fn invite_owner_clashes_like_any_invitation() {
    Given::with(())
        .given(vec![invited(2, "ann@acme.io", UserRole::Admin)])
        .when(invite_owner(1, "ann@acme.io"))
        .then_expect_error(DirectoryError::EmailTaken);
    Given::with(())
        .given(vec![invited(2, "ann@acme.io", UserRole::Admin)])
        .when(invite_owner(2, "owner@acme.io"))
        .then_expect_error(DirectoryError::UserExists);
}

#[test]
fn resend_replaces_the_token() {
    let fresh = token("fresh", 10);
    Given::with(())
        .given(vec![invited(2, "ann@acme.io", UserRole::User)])
        .when(DirectoryCommand::ResendInvitation { user_id: uid(2), invitation: fresh.clone(), at: day(3) })
        .then_expect_events(vec![DirectoryEvent::InvitationResent { user_id: uid(2), invitation: fresh.clone() }]);
    let resent = vec![
        invited(2, "ann@acme.io", UserRole::User),
        DirectoryEvent::InvitationResent { user_id: uid(2), invitation: fresh },
    ];
    Given::with(())
        .given(resent.clone())
        .when(accept("inv2", day(3)))
        .then_expect_error(DirectoryError::InvitationInvalid);
    // The new token is valid past the old expiry.
    Given::with(()).given(resent).when(accept("fresh", day(8))).then_expect_events(vec![
        DirectoryEvent::InvitationAccepted { user_id: uid(2), credential_id: cred(99), accepted_at: day(8) },
    ]);
}

#[test]
fn resend_needs_an_invited_user() {
    let cmd = |n| DirectoryCommand::ResendInvitation { user_id: uid(n), invitation: token("x", 7), at: t0() };
    Given::with(()).given(team()).when(cmd(2)).then_expect_error(DirectoryError::NotInvited);
    Given::with(()).given(team()).when(cmd(9)).then_expect_error(DirectoryError::UserNotFound);
    Given::with(())
        .given(vec![invited(2, "ann@acme.io", UserRole::User), disabled(2)])
        .when(cmd(2))
        .then_expect_error(DirectoryError::NotInvited);
}

#[test]
fn accepting_activates_the_user() {
    Given::with(())
        .given(vec![invited(2, "ann@acme.io", UserRole::User)])
        .when(accept("inv2", day(1)))
        .then_expect_events(vec![DirectoryEvent::InvitationAccepted {
            user_id: uid(2),
            credential_id: cred(99),
            accepted_at: day(1),
        }]);
    let after = state(vec![invited(2, "ann@acme.io", UserRole::User), accepted(2)]);
    let user = after.user(&uid(2)).unwrap();
    assert_eq!((user.status, user.invitation.clone(), user.credential_id), (UserStatus::Active, None, Some(cred(2))));
}

#[test]
fn an_expired_invitation_cannot_be_accepted() {
    Given::with(())
        .given(vec![invited(2, "ann@acme.io", UserRole::User)])
        .when(accept("inv2", day(7)))
        .then_expect_error(DirectoryError::InvitationExpired);
}

#[test]
fn an_invitation_works_once_and_only_with_its_own_hash() {
    Given::with(())
        .given(vec![invited(2, "ann@acme.io", UserRole::User), accepted(2)])
        .when(accept("inv2", day(2)))
        .then_expect_error(DirectoryError::InvitationInvalid);
    Given::with(())
        .given(vec![invited(2, "ann@acme.io", UserRole::User)])
        .when(accept("unknown", day(1)))
        .then_expect_error(DirectoryError::InvitationInvalid);
    // Disabled before accepting: the token does not work until enabled.
    Given::with(())
        .given(vec![invited(2, "ann@acme.io", UserRole::User), disabled(2)])
        .when(accept("inv2", day(1)))
        .then_expect_error(DirectoryError::InvitationInvalid);
}

#[test]
fn platform_users_are_created_active() {
    let cmd = |role| DirectoryCommand::CreatePlatformUser {
        user_id: uid(1),
        email: "op@keel.dev".into(),
        role,
        credential_id: cred(1),
        at: t0(),
    };
    Given::with(()).given_no_previous_events().when(cmd(UserRole::Operator)).then_expect_events(vec![
        DirectoryEvent::Created {
            user_id: uid(1),
            email: "op@keel.dev".into(),
            role: UserRole::Operator,
            credential_id: cred(1),
            created_at: t0(),
        },
    ]);
    for role in [UserRole::Owner, UserRole::Admin, UserRole::User] {
        Given::with(()).given_no_previous_events().when(cmd(role)).then_expect_error(DirectoryError::InvalidRole);
    }
    let created = DirectoryEvent::Created {
        user_id: uid(2),
        email: "OP@keel.dev".into(),
        role: UserRole::Auditor,
        credential_id: cred(2),
        created_at: t0(),
    };
    Given::with(())
        .given(vec![created.clone()])
        .when(cmd(UserRole::Auditor))
        .then_expect_error(DirectoryError::EmailTaken);
    let user = state(vec![created]).user(&uid(2)).cloned().unwrap();
    assert_eq!((user.status, user.credential_id), (UserStatus::Active, Some(cred(2))));
}

// Roles and the last-owner guard.

#[test]
fn changes_a_role() {
    Given::with(()).given(team()).when(change_role(3, UserRole::Admin, Acting::Admin)).then_expect_events(vec![
        DirectoryEvent::RoleChanged { user_id: uid(3), from: UserRole::User, to: UserRole::Admin },
    ]);
}

#[test]
fn changing_to_the_same_role_changes_nothing() {
    Given::with(()).given(team()).when(change_role(3, UserRole::User, Acting::Admin)).then_expect_events(vec![]);
}

#[test]
fn platform_roles_are_not_tenant_roles() {
    for role in [UserRole::Operator, UserRole::Auditor] {
        Given::with(())
            .given(team())
            .when(change_role(3, role, Acting::Platform))
            .then_expect_error(DirectoryError::InvalidRole);
    }
    let operator = DirectoryEvent::Created {
        user_id: uid(1),
        email: "op@keel.dev".into(),
        role: UserRole::Operator,
        credential_id: cred(1),
        created_at: t0(),
    };
    Given::with(())
        .given(vec![operator])
        .when(change_role(1, UserRole::Admin, Acting::Platform))
        .then_expect_error(DirectoryError::InvalidRole);
}

#[test]
fn unknown_users_are_not_found() {
    for cmd in [
        change_role(9, UserRole::Admin, Acting::Owner),
        DirectoryCommand::Disable { user_id: uid(9), acting: Acting::Owner },
        DirectoryCommand::Enable { user_id: uid(9), acting: Acting::Owner },
        DirectoryCommand::Delete { user_id: uid(9), acting: Acting::Owner, at: t0() },
        DirectoryCommand::ChangePassword { user_id: uid(9), credential_id: cred(1), at: t0() },
        DirectoryCommand::RequestPasswordReset { user_id: uid(9), reset: token("r", 1), at: t0() },
        DirectoryCommand::RevokeSessions { user_id: uid(9) },
    ] {
        Given::with(()).given(team()).when(cmd).then_expect_error(DirectoryError::UserNotFound);
    }
}

#[test]
fn the_last_owner_cannot_be_demoted_disabled_or_deleted() {
    for acting in [Acting::Owner, Acting::Platform] {
        for cmd in [
            change_role(1, UserRole::Admin, acting),
            DirectoryCommand::Disable { user_id: uid(1), acting },
            DirectoryCommand::Delete { user_id: uid(1), acting, at: t0() },
        ] {
            Given::with(()).given(team()).when(cmd).then_expect_error(DirectoryError::LastOwner);
        }
    }
    // An owner still invited is an owner too.
    Given::with(())
        .given(vec![invited(1, "owner@acme.io", UserRole::Owner)])
        .when(DirectoryCommand::Disable { user_id: uid(1), acting: Acting::Platform })
        .then_expect_error(DirectoryError::LastOwner);
}

#[test]
fn a_second_owner_lifts_the_guard() {
    Given::with(()).given(two_owners()).when(change_role(1, UserRole::Admin, Acting::Owner)).then_expect_events(vec![
        DirectoryEvent::RoleChanged { user_id: uid(1), from: UserRole::Owner, to: UserRole::Admin },
    ]);
    Given::with(())
        .given(two_owners())
        .when(DirectoryCommand::Disable { user_id: uid(1), acting: Acting::Owner })
        .then_expect_events(vec![disabled(1)]);
    Given::with(())
        .given(two_owners())
        .when(DirectoryCommand::Delete { user_id: uid(1), acting: Acting::Platform, at: t0() })
        .then_expect_events(vec![DirectoryEvent::Deleted { user_id: uid(1), deleted_at: t0() }]);
    // A second owner still invited lifts it as well.
    let mut events = team();
    events.push(invited(4, "second@acme.io", UserRole::Owner));
    Given::with(())
        .given(events)
        .when(DirectoryCommand::Disable { user_id: uid(1), acting: Acting::Owner })
        .then_expect_events(vec![disabled(1)]);
}

#[test]
fn a_disabled_second_owner_does_not_lift_the_guard() {
    let mut events = two_owners();
    events.push(disabled(4));
    for cmd in [
        change_role(1, UserRole::User, Acting::Owner),
        DirectoryCommand::Disable { user_id: uid(1), acting: Acting::Owner },
        DirectoryCommand::Delete { user_id: uid(1), acting: Acting::Owner, at: t0() },
    ] {
        Given::with(()).given(events.clone()).when(cmd).then_expect_error(DirectoryError::LastOwner);
    }
    // The disabled owner itself is not guarded.
    Given::with(())
        .given(events)
        .when(DirectoryCommand::Delete { user_id: uid(4), acting: Acting::Owner, at: t0() })
        .then_expect_events(vec![DirectoryEvent::Deleted { user_id: uid(4), deleted_at: t0() }]);
}

#[test]
fn admins_cannot_touch_owners_or_make_owners() {
    let mut events = two_owners();
    events.push(disabled(4));
    for (given, cmd) in [
        (two_owners(), change_role(1, UserRole::Admin, Acting::Admin)),
        (two_owners(), change_role(3, UserRole::Owner, Acting::Admin)),
        (two_owners(), DirectoryCommand::Disable { user_id: uid(1), acting: Acting::Admin }),
        (events, DirectoryCommand::Enable { user_id: uid(4), acting: Acting::Admin }),
        (two_owners(), DirectoryCommand::Delete { user_id: uid(1), acting: Acting::Admin, at: t0() }),
    ] {
        Given::with(()).given(given).when(cmd).then_expect_error(DirectoryError::OwnerRequired);
    }
    assert_eq!(DirectoryError::OwnerRequired.kind(), ErrorKind::PermissionDenied);
}

#[test]
fn owners_and_the_platform_can_make_owners() {
    for acting in [Acting::Owner, Acting::Platform] {
        Given::with(()).given(team()).when(change_role(3, UserRole::Owner, acting)).then_expect_events(vec![
            DirectoryEvent::RoleChanged { user_id: uid(3), from: UserRole::User, to: UserRole::Owner },
        ]);
    }
}

#[test]
fn admins_manage_admins_and_users() {
    Given::with(())
        .given(team())
        .when(DirectoryCommand::Disable { user_id: uid(3), acting: Acting::Admin })
        .then_expect_events(vec![disabled(3)]);
    Given::with(())
        .given(team())
        .when(DirectoryCommand::Delete { user_id: uid(2), acting: Acting::Admin, at: t0() })
        .then_expect_events(vec![DirectoryEvent::Deleted { user_id: uid(2), deleted_at: t0() }]);
}

// Disable, enable, delete.

#[test]
fn disable_and_enable_only_once() {
    let mut events = team();
    events.push(disabled(3));
    Given::with(())
        .given(events)
        .when(DirectoryCommand::Disable { user_id: uid(3), acting: Acting::Owner })
        .then_expect_error(DirectoryError::AlreadyDisabled);
    Given::with(())
        .given(team())
        .when(DirectoryCommand::Enable { user_id: uid(3), acting: Acting::Owner })
        .then_expect_error(DirectoryError::NotDisabled);
}

#[test]
fn enable_returns_to_the_status_before_disable() {
    let mut events = team();
    events.push(disabled(3));
    Given::with(())
        .given(events)
        .when(DirectoryCommand::Enable { user_id: uid(3), acting: Acting::Admin })
        .then_expect_events(vec![DirectoryEvent::Enabled { user_id: uid(3), status: UserStatus::Active }]);
    let events =
        vec![invited(1, "owner@acme.io", UserRole::Owner), invited(2, "ann@acme.io", UserRole::User), disabled(2)];
    Given::with(())
        .given(events.clone())
        .when(DirectoryCommand::Enable { user_id: uid(2), acting: Acting::Owner })
        .then_expect_events(vec![DirectoryEvent::Enabled { user_id: uid(2), status: UserStatus::Invited }]);
    let mut directory = state(events);
    assert_eq!(directory.user(&uid(2)).unwrap().status_before_disable, Some(UserStatus::Invited));
    directory.apply(DirectoryEvent::Enabled { user_id: uid(2), status: UserStatus::Invited });
    let user = directory.user(&uid(2)).unwrap();
    assert_eq!((user.status, user.status_before_disable), (UserStatus::Invited, None));
}

#[test]
fn deleting_frees_the_e_mail() {
    let events =
        vec![invited(2, "ann@acme.io", UserRole::User), DirectoryEvent::Deleted { user_id: uid(2), deleted_at: t0() }];
    assert!(state(events.clone()).find_by_email("ann@acme.io").is_none());
    Given::with(()).given(events).when(invite(5, "ANN@acme.io", UserRole::User)).then_expect_events(vec![invited(
        5,
        "ANN@acme.io",
        UserRole::User,
    )]);
}

// Passwords.

#[test]
fn an_active_user_changes_its_password() {
    Given::with(())
        .given(team())
        .when(DirectoryCommand::ChangePassword { user_id: uid(3), credential_id: cred(50), at: day(2) })
        .then_expect_events(vec![DirectoryEvent::PasswordChanged {
            user_id: uid(3),
            credential_id: cred(50),
            reason: PasswordChangeReason::Changed,
            changed_at: day(2),
        }]);
}

#[test]
fn password_changes_and_resets_need_an_active_user() {
    let mut events = team();
    events.extend([invited(5, "new@acme.io", UserRole::User), disabled(3)]);
    for n in [3, 5] {
        Given::with(())
            .given(events.clone())
            .when(DirectoryCommand::ChangePassword { user_id: uid(n), credential_id: cred(50), at: day(2) })
            .then_expect_error(DirectoryError::UserNotActive);
        Given::with(())
            .given(events.clone())
            .when(DirectoryCommand::RequestPasswordReset { user_id: uid(n), reset: token("r", 3), at: day(2) })
            .then_expect_error(DirectoryError::UserNotActive);
    }
}

#[test]
fn a_password_reset_sets_a_new_password_once() {
    Given::with(())
        .given(team())
        .when(DirectoryCommand::RequestPasswordReset { user_id: uid(3), reset: token("r1", 3), at: day(2) })
        .then_expect_events(vec![request_reset(3, "r1")]);
    let mut events = team();
    events.push(request_reset(3, "r1"));
    let changed = DirectoryEvent::PasswordChanged {
        user_id: uid(3),
        credential_id: cred(77),
        reason: PasswordChangeReason::Reset,
        changed_at: day(2),
    };
    Given::with(()).given(events.clone()).when(reset("r1", day(2))).then_expect_events(vec![changed.clone()]);
    events.push(changed);
    Given::with(()).given(events).when(reset("r1", day(2))).then_expect_error(DirectoryError::ResetInvalid);
}

#[test]
fn a_mailed_token_is_usable_until_it_expires_is_used_or_is_superseded() {
    let mut events = vec![invited(2, "ann@acme.io", UserRole::User)];
    let directory = state(events.clone());
    assert_eq!(directory.usable_invitation("inv2", day(6)), Ok(&uid(2)));
    assert_eq!(directory.usable_invitation("inv2", day(7)), Err(DirectoryError::InvitationExpired));
    assert_eq!(directory.usable_invitation("other", day(1)), Err(DirectoryError::InvitationInvalid));
    events.push(accepted(2));
    events.push(request_reset(2, "r2"));
    let directory = state(events);
    assert_eq!(directory.usable_invitation("inv2", day(1)), Err(DirectoryError::InvitationInvalid), "used");
    assert_eq!(directory.usable_reset("r2", day(2)), Ok(&uid(2)));
    assert_eq!(directory.usable_reset("r2", day(3)), Err(DirectoryError::ResetExpired));
    assert_eq!(directory.usable_reset("inv2", day(1)), Err(DirectoryError::ResetInvalid));
}

#[test]
fn an_expired_reset_is_refused() {
    let mut events = team();
    events.push(request_reset(3, "r1"));
    Given::with(()).given(events).when(reset("r1", day(3))).then_expect_error(DirectoryError::ResetExpired);
}

#[test]
fn a_second_reset_request_supersedes_the_first() {
    let mut events = team();
    events.extend([request_reset(3, "r1"), request_reset(3, "r2")]);
    Given::with(()).given(events.clone()).when(reset("r1", day(1))).then_expect_error(DirectoryError::ResetInvalid);
    Given::with(()).given(events).when(reset("r2", day(1))).then_expect_events(vec![DirectoryEvent::PasswordChanged {
        user_id: uid(3),
        credential_id: cred(77),
        reason: PasswordChangeReason::Reset,
        changed_at: day(1),
    }]);
}

#[test]
fn a_reset_is_void_once_the_password_changed_or_the_user_is_disabled() {
    let mut events = team();
    events.extend([
        request_reset(3, "r1"),
        DirectoryEvent::PasswordChanged {
            user_id: uid(3),
            credential_id: cred(50),
            reason: PasswordChangeReason::Changed,
            changed_at: day(1),
        },
    ]);
    assert_eq!(state(events.clone()).user(&uid(3)).unwrap().reset, None);
    Given::with(()).given(events).when(reset("r1", day(1))).then_expect_error(DirectoryError::ResetInvalid);
    let mut events = team();
    events.extend([request_reset(3, "r1"), disabled(3)]);
    Given::with(()).given(events).when(reset("r1", day(1))).then_expect_error(DirectoryError::ResetInvalid);
}

// Sessions, policy.

#[test]
fn revokes_the_sessions_of_a_known_user() {
    Given::with(())
        .given(team())
        .when(DirectoryCommand::RevokeSessions { user_id: uid(2) })
        .then_expect_events(vec![DirectoryEvent::SessionsRevoked { user_id: uid(2) }]);
}

#[test]
fn sets_a_valid_policy() {
    let policy = PasswordPolicy { min_length: 16, require_digit: true, ..PasswordPolicy::default() };
    Given::with(())
        .given(owner())
        .when(DirectoryCommand::SetPolicy { password_policy: policy.clone(), invitation_ttl_days: 30 })
        .then_expect_events(vec![DirectoryEvent::PolicySet {
            password_policy: policy.clone(),
            invitation_ttl_days: 30,
        }]);
    assert_eq!(Directory::default().invitation_ttl_days(), DEFAULT_INVITATION_TTL_DAYS);
    assert_eq!(Directory::default().password_policy(), &PasswordPolicy::default());
    let set = state(vec![DirectoryEvent::PolicySet { password_policy: policy.clone(), invitation_ttl_days: 30 }]);
    assert_eq!((set.invitation_ttl_days(), set.password_policy()), (30, &policy));
}

#[test]
fn refuses_a_policy_out_of_range() {
    for (min_length, invitation_ttl_days) in [(7, 7), (129, 7), (12, 0), (12, 91)] {
        let password_policy = PasswordPolicy { min_length, ..PasswordPolicy::default() };
        Given::with(())
            .given(owner())
            .when(DirectoryCommand::SetPolicy { password_policy, invitation_ttl_days })
            .then_expect_error(DirectoryError::InvalidPolicy);
    }
    for invitation_ttl_days in [1, 90] {
        Given::with(())
            .given(owner())
            .when(DirectoryCommand::SetPolicy { password_policy: PasswordPolicy::default(), invitation_ttl_days })
            .then_expect_events(vec![DirectoryEvent::PolicySet {
                password_policy: PasswordPolicy::default(),
                invitation_ttl_days,
            }]);
    }
}

// State, events, commands, errors.

#[test]
fn finds_users_by_e_mail_case_insensitively() {
    let directory = state(team());
    let (id, user) = directory.find_by_email("ADMIN@Acme.IO").unwrap();
    assert_eq!((id, user.role), (&uid(2), UserRole::Admin));
    assert!(directory.find_by_email("nobody@acme.io").is_none());
    assert_eq!(directory.users().map(|(id, _)| id.clone()).collect::<Vec<_>>(), vec![uid(1), uid(2), uid(3)]);
}

fn one_of_each() -> Vec<DirectoryEvent> {
    vec![
        invited(2, "ann@acme.io", UserRole::User),
        DirectoryEvent::InvitationResent { user_id: uid(2), invitation: token("x", 7) },
        accepted(2),
        DirectoryEvent::Created {
            user_id: uid(2),
            email: "op@keel.dev".into(),
            role: UserRole::Operator,
            credential_id: cred(1),
            created_at: t0(),
        },
        DirectoryEvent::RoleChanged { user_id: uid(2), from: UserRole::User, to: UserRole::Admin },
        disabled(2),
        DirectoryEvent::Enabled { user_id: uid(2), status: UserStatus::Active },
        DirectoryEvent::Deleted { user_id: uid(2), deleted_at: t0() },
        DirectoryEvent::PasswordChanged {
            user_id: uid(2),
            credential_id: cred(1),
            reason: PasswordChangeReason::Reset,
            changed_at: t0(),
        },
        request_reset(2, "r"),
        DirectoryEvent::SessionsRevoked { user_id: uid(2) },
        DirectoryEvent::PolicySet { password_policy: PasswordPolicy::default(), invitation_ttl_days: 7 },
    ]
}

#[test]
fn ends_sessions_on_role_change_disable_delete_password_change_and_revocation() {
    let ending =
        ["user.role_changed", "user.disabled", "user.deleted", "user.password_changed", "user.sessions_revoked"];
    for event in one_of_each() {
        let expected = ending.contains(&event.event_type().as_str()).then(|| uid(2));
        assert_eq!(event.ends_sessions_of(), expected.as_ref(), "{}", event.event_type());
        let about = (event.event_type() != "directory.policy_set").then(|| uid(2));
        assert_eq!(event.user_id(), about.as_ref(), "{}", event.event_type());
    }
}

#[test]
fn event_types_match_the_serialized_tag() {
    let json = serde_json::to_string(&invited(2, "ann@acme.io", UserRole::Admin)).unwrap();
    assert!(json.contains(r#""type":"user.invited""#), "{json}");
    assert!(json.contains(r#""role":"admin""#), "{json}");
    for event in one_of_each() {
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.event_type());
        assert_eq!(event.event_version(), "1");
        assert_eq!(serde_json::from_value::<DirectoryEvent>(json).unwrap(), event);
    }
}

#[test]
fn the_state_round_trips_through_serde() {
    let directory = state(two_owners());
    let json = serde_json::to_value(&directory).unwrap();
    assert_eq!(serde_json::from_value::<Directory>(json).unwrap(), directory);
}

#[test]
fn roles_parse_case_insensitively() {
    assert_eq!(" Admin ".parse::<UserRole>(), Ok(UserRole::Admin));
    assert_eq!("OPERATOR".parse::<UserRole>(), Ok(UserRole::Operator));
    assert_eq!("root".parse::<UserRole>(), Err(DirectoryError::InvalidRole));
    for role in UserRole::ALL {
        assert_eq!(role.as_str().parse::<UserRole>(), Ok(role));
        assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        assert_eq!(role.is_platform(), matches!(role, UserRole::Operator | UserRole::Auditor));
    }
    for status in [UserStatus::Invited, UserStatus::Active, UserStatus::Disabled] {
        assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
    }
}

#[test]
fn fingerprints_leave_out_what_changes_on_a_retry() {
    let first = DirectoryCommand::Invite {
        user_id: uid(1),
        email: "Ann@acme.io".into(),
        role: UserRole::User,
        invitation: token("a", 7),
        at: t0(),
    };
    let retry = DirectoryCommand::Invite {
        user_id: uid(2),
        email: "ann@acme.io".into(),
        role: UserRole::User,
        invitation: token("b", 8),
        at: day(1),
    };
    assert_eq!(first.fingerprint(), "invite|ann@acme.io|user");
    assert_eq!(first.fingerprint(), retry.fingerprint());
    assert_ne!(first.fingerprint(), invite(1, "ann@acme.io", UserRole::Admin).fingerprint());
    let resend = |hash, at| DirectoryCommand::ResendInvitation { user_id: uid(3), invitation: token(hash, 9), at };
    assert_eq!(resend("a", t0()).fingerprint(), resend("b", day(1)).fingerprint());
    assert_eq!(resend("a", t0()).fingerprint(), format!("resend|{}", uid(3)));
    assert_eq!(change_role(3, UserRole::Admin, Acting::Owner).fingerprint(), format!("change_role|{}|admin", uid(3)));
    assert_eq!(accept("a", t0()).fingerprint(), accept("b", day(1)).fingerprint());
    assert_eq!(reset("a", t0()).fingerprint(), reset("b", day(1)).fingerprint());
    let change = |n, at| DirectoryCommand::ChangePassword { user_id: uid(3), credential_id: cred(n), at };
    assert_eq!(change(1, t0()).fingerprint(), change(2, day(1)).fingerprint());
    let delete = |n| DirectoryCommand::Delete { user_id: uid(n), acting: Acting::Owner, at: t0() };
    assert_ne!(delete(2).fingerprint(), delete(3).fingerprint());
    let policy =
        |ttl| DirectoryCommand::SetPolicy { password_policy: PasswordPolicy::default(), invitation_ttl_days: ttl };
    assert_ne!(policy(7).fingerprint(), policy(8).fingerprint());
}

#[test]
fn errors_have_stable_codes_and_kinds() {
    use DirectoryError::*;
    for (err, code, kind) in [
        (EmailTaken, "email_taken", ErrorKind::AlreadyExists),
        (UserExists, "user_exists", ErrorKind::AlreadyExists),
        (OwnerExists, "owner_exists", ErrorKind::AlreadyExists),
        (InvalidExpiry, "invalid_expiry", ErrorKind::InvalidArgument),
        (InvalidRole, "invalid_role", ErrorKind::InvalidArgument),
        (InvalidPolicy, "invalid_policy", ErrorKind::InvalidArgument),
        (WeakPassword("a digit".into()), "weak_password", ErrorKind::InvalidArgument),
        (UserNotFound, "user_not_found", ErrorKind::NotFound),
        (NotInvited, "not_invited", ErrorKind::FailedPrecondition),
        (InvitationInvalid, "invitation_invalid", ErrorKind::FailedPrecondition),
        (InvitationExpired, "invitation_expired", ErrorKind::FailedPrecondition),
        (OwnerRequired, "owner_required", ErrorKind::PermissionDenied),
        (LastOwner, "last_owner", ErrorKind::FailedPrecondition),
        (AlreadyDisabled, "user_disabled", ErrorKind::FailedPrecondition),
        (NotDisabled, "user_not_disabled", ErrorKind::FailedPrecondition),
        (UserNotActive, "user_not_active", ErrorKind::FailedPrecondition),
        (ResetInvalid, "reset_invalid", ErrorKind::FailedPrecondition),
        (ResetExpired, "reset_expired", ErrorKind::FailedPrecondition),
    ] {
        assert_eq!((err.code(), err.kind()), (code, kind), "{err:?}");
    }
    assert_eq!(WeakPassword("a digit".into()).to_string(), "password does not meet the policy: needs a digit");
}
