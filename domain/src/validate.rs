//! Input rules shared by aggregates: names, domains, e-mail addresses, slugs.

/// A display name: 1 to 200 characters after trimming, no control characters.
pub fn display_name(raw: &str) -> Option<String> {
    let name = raw.trim();
    let ok = !name.is_empty() && name.chars().count() <= 200 && !name.chars().any(char::is_control);
    ok.then(|| name.to_string())
}

/// A tenant domain: a lowercase DNS name (`acme` or `acme.example.com`), each
/// label 1 to 63 of `a-z 0-9 -`, not starting or ending with `-`, 253 at most.
pub fn domain(raw: &str) -> Option<String> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let ok = !domain.is_empty() && domain.len() <= 253 && domain.split('.').all(label_ok);
    ok.then_some(domain)
}

/// An e-mail address in the form `local@domain`, 254 characters at most, no spaces.
/// The domain part is lowercased; the local part is kept as given.
pub fn email(raw: &str) -> Option<String> {
    let email = raw.trim();
    let (local, host) = email.rsplit_once('@')?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && !local.contains('@')
        && host.contains('.')
        && domain(host).is_some();
    ok.then(|| format!("{local}@{}", host.to_ascii_lowercase()))
}

/// An environment name such as `production` or `eu-staging`: 1 to 64 of `a-z 0-9 - _`,
/// starting with a letter; lowercased.
pub fn environment(raw: &str) -> Option<String> {
    let env = raw.trim().to_ascii_lowercase();
    let ok = env.len() <= 64
        && env.starts_with(|c: char| c.is_ascii_lowercase())
        && env.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    ok.then_some(env)
}

/// A slug such as `fintech` or `ap-northeast-1`: 1 to 64 of `a-z 0-9 -`, not starting
/// with `-`; trimmed and lowercased.
pub fn slug(raw: &str) -> Option<String> {
    let slug = raw.trim().to_ascii_lowercase();
    let ok = slug.len() <= 64
        && slug.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(slug)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert_eq!(domain(" Acme ").as_deref(), Some("acme"));
        assert_eq!(domain("eu.acme.io.").as_deref(), Some("eu.acme.io"));
        assert_eq!(domain("a-b.c").as_deref(), Some("a-b.c"));
        for bad in ["", "-acme", "acme-", "ac me", "acme..io", "ac_me", &"a".repeat(64)] {
            assert_eq!(domain(bad), None, "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(email("Ann@Example.COM").as_deref(), Some("Ann@example.com"));
        for bad in ["", "ann", "@example.com", "ann@", "ann@localhost", "a nn@example.com", "a@b@example.com"] {
            assert_eq!(email(bad), None, "{bad}");
        }
    }

    #[test]
    fn environments() {
        assert_eq!(environment(" Production ").as_deref(), Some("production"));
        assert_eq!(environment("eu-staging_2").as_deref(), Some("eu-staging_2"));
        for bad in ["", "2prod", "pro d", "prod!", &"p".repeat(65)] {
            assert_eq!(environment(bad), None, "{bad}");
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(slug(" FinTech ").as_deref(), Some("fintech"));
        assert_eq!(slug("ap-northeast-1").as_deref(), Some("ap-northeast-1"));
        assert_eq!(slug("9").as_deref(), Some("9"));
        assert_eq!(slug(&"s".repeat(64)).as_deref(), Some("s".repeat(64).as_str()));
        for bad in ["", "  ", "-eu", "fin tech", "fin_tech", "é", &"s".repeat(65)] {
            assert_eq!(slug(bad), None, "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(display_name("  Acme Corp ").as_deref(), Some("Acme Corp"));
        assert_eq!(display_name("   "), None);
        assert_eq!(display_name("a\u{0}b"), None);
        assert_eq!(display_name(&"x".repeat(201)), None);
    }
}
