//! A tenant's password policy. Passwords reach the domain already hashed, so the
//! service calls [`PasswordPolicy::check`] on the clear text before hashing it.

use serde::{Deserialize, Serialize};

use super::errors::DirectoryError;

/// The longest password accepted, in characters, whatever the policy.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// The shortest `min_length` a policy may set.
const MIN_LENGTH_FLOOR: u32 = 8;

/// The longest `min_length` a policy may set.
const MIN_LENGTH_CEILING: u32 = 128;

/// What a password must contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PasswordPolicy {
    /// The minimum number of characters (not bytes), 8 to 128.
    pub min_length: u32,
    /// Whether a lowercase letter is required.
    pub require_lowercase: bool,
    /// Whether an uppercase letter is required.
    pub require_uppercase: bool,
    /// Whether a digit is required.
    pub require_digit: bool,
    /// Whether a symbol (any character that is not a letter or a digit) is required.
    pub require_symbol: bool,
}

impl Default for PasswordPolicy {
    /// At least 12 characters, no required character classes.
    fn default() -> Self {
        Self {
            min_length: 12,
            require_lowercase: false,
            require_uppercase: false,
            require_digit: false,
            require_symbol: false,
        }
    }
}

impl PasswordPolicy {
    /// Checks the policy itself: `min_length` must be 8 to 128.
    pub fn validate(&self) -> Result<(), DirectoryError> {
        if (MIN_LENGTH_FLOOR..=MIN_LENGTH_CEILING).contains(&self.min_length) {
            Ok(())
        } else {
            Err(DirectoryError::InvalidPolicy)
        }
    }

    /// Checks a clear-text password against the policy. Lengths count characters, not bytes;
    /// a symbol is any character that is not alphanumeric. The error names the first rule broken.
    pub fn check(&self, password: &str) -> Result<(), DirectoryError> {
        let weak = |needs: &str| Err(DirectoryError::WeakPassword(needs.to_string()));
        let chars = password.chars().count();
        if chars < self.min_length as usize {
            return weak(&format!("at least {} characters", self.min_length));
        }
        if chars > MAX_PASSWORD_CHARS {
            return weak(&format!("at most {MAX_PASSWORD_CHARS} characters"));
        }
        if self.require_lowercase && !password.chars().any(char::is_lowercase) {
            return weak("a lowercase letter");
        }
        if self.require_uppercase && !password.chars().any(char::is_uppercase) {
            return weak("an uppercase letter");
        }
        if self.require_digit && !password.chars().any(char::is_numeric) {
            return weak("a digit");
        }
        if self.require_symbol && password.chars().all(char::is_alphanumeric) {
            return weak("a symbol");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> PasswordPolicy {
        PasswordPolicy {
            min_length: 8,
            require_lowercase: true,
            require_uppercase: true,
            require_digit: true,
            require_symbol: true,
        }
    }

    fn needs(policy: &PasswordPolicy, password: &str) -> Option<String> {
        match policy.check(password) {
            Ok(()) => None,
            Err(DirectoryError::WeakPassword(needs)) => Some(needs),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_default_wants_twelve_characters_and_nothing_else() {
        let policy = PasswordPolicy::default();
        assert_eq!(policy.validate(), Ok(()));
        assert_eq!(needs(&policy, "abcdefghijk").as_deref(), Some("at least 12 characters"));
        assert_eq!(needs(&policy, "abcdefghijkl"), None);
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let policy = PasswordPolicy::default();
        // 11 characters, 22 bytes.
        assert_eq!(needs(&policy, "ééééééééééé").as_deref(), Some("at least 12 characters"));
        assert_eq!(needs(&policy, "éééééééééééé"), None);
        assert_eq!(needs(&policy, &"é".repeat(MAX_PASSWORD_CHARS)), None);
        assert_eq!(needs(&policy, &"é".repeat(MAX_PASSWORD_CHARS + 1)).as_deref(), Some("at most 256 characters"));
    }

    #[test]
    fn each_required_class_is_named_in_order() {
        let policy = strict();
        assert_eq!(needs(&policy, "Aa1!").as_deref(), Some("at least 8 characters"));
        assert_eq!(needs(&policy, "ABCDEFG1!").as_deref(), Some("a lowercase letter"));
        assert_eq!(needs(&policy, "abcdefg1!").as_deref(), Some("an uppercase letter"));
        assert_eq!(needs(&policy, "abcdEFGH!").as_deref(), Some("a digit"));
        assert_eq!(needs(&policy, "abcdEFG12").as_deref(), Some("a symbol"));
        assert_eq!(needs(&policy, "abcd EFG12"), None, "a space is a symbol");
        assert_eq!(needs(&policy, "abcdEFG1!"), None);
    }

    #[test]
    fn the_error_reads_as_a_sentence() {
        let err = PasswordPolicy::default().check("short").unwrap_err();
        assert_eq!(err.to_string(), "password does not meet the policy: needs at least 12 characters");
    }

    #[test]
    fn min_length_must_be_eight_to_one_hundred_twenty_eight() {
        for (min_length, ok) in [(7, false), (8, true), (128, true), (129, false), (0, false)] {
            let policy = PasswordPolicy { min_length, ..PasswordPolicy::default() };
            assert_eq!(policy.validate().is_ok(), ok, "{min_length}");
        }
        assert_eq!(PasswordPolicy { min_length: 7, ..strict() }.validate(), Err(DirectoryError::InvalidPolicy));
    }
}
