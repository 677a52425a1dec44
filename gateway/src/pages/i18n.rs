//! The pages' languages (English and Japanese) and their message catalogs, one TOML file
//! per language under `gateway/ui/i18n/`, embedded in the binary.

use std::collections::BTreeMap;
use std::sync::LazyLock;

/// A language of the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English (the default).
    En,
    /// Japanese.
    Ja,
}

impl Lang {
    /// Every language, in the switcher's order.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Ja];

    /// The BCP 47 tag (`<html lang>`, the `lang` parameter and the `keel_lang` cookie).
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }

    /// The language's own name (what the switcher shows).
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Ja => "日本語",
        }
    }

    /// The language a tag names (`ja`, `ja-JP`, `EN-us` …), if it is one of ours.
    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        Lang::ALL.into_iter().find(|lang| lang.code() == primary)
    }

    /// The first of our languages in an `Accept-Language` header, by quality.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut ranked: Vec<(u16, usize, Lang)> = header
            .split(',')
            .take(32)
            .enumerate()
            .filter_map(|(i, item)| {
                let mut parts = item.split(';');
                let lang = Lang::parse(parts.next()?)?;
                let quality = parts.find_map(|p| p.trim().strip_prefix("q=")).map_or(Some(1000), |q| {
                    q.trim().parse::<f32>().ok().map(|q| (q.clamp(0.0, 1.0) * 1000.0) as u16)
                })?;
                (quality > 0).then_some((quality, i, lang))
            })
            .collect();
        ranked.sort_by_key(|(quality, i, _)| (std::cmp::Reverse(*quality), *i));
        ranked.first().map(|(_, _, lang)| *lang)
    }

    /// The language's messages.
    pub fn catalog(self) -> &'static Catalog {
        match self {
            Lang::En => &EN,
            Lang::Ja => &JA,
        }
    }
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The English catalog.
static EN: LazyLock<Catalog> = LazyLock::new(|| {
    Catalog::parse(include_str!("../../ui/i18n/en.toml")).expect("en.toml is checked by the unit tests")
});

/// The Japanese catalog.
static JA: LazyLock<Catalog> = LazyLock::new(|| {
    Catalog::parse(include_str!("../../ui/i18n/ja.toml")).expect("ja.toml is checked by the unit tests")
});

/// One language's messages, by dotted key (`login.email`).
#[derive(Debug, Default)]
pub struct Catalog {
    messages: BTreeMap<String, String>,
}

impl Catalog {
    /// Reads a catalog: TOML tables of strings, flattened to dotted keys.
    pub fn parse(text: &str) -> Result<Catalog, toml::de::Error> {
        let table: toml::Table = toml::from_str(text)?;
        let mut messages = BTreeMap::new();
        flatten("", &table, &mut messages);
        Ok(Catalog { messages })
    }

    /// The message `key` (the key itself if missing: a unit test keeps that from happening).
    pub fn get<'a>(&'a self, key: &'a str) -> &'a str {
        self.messages.get(key).map_or(key, String::as_str)
    }

    /// The message `key` with `{name}` replaced by `value`.
    pub fn with(&self, key: &str, name: &str, value: impl std::fmt::Display) -> String {
        self.get(key).replace(&format!("{{{name}}}"), &value.to_string())
    }

    /// Whether the catalog has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.messages.contains_key(key)
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.messages.keys().map(String::as_str)
    }
}

/// Adds the strings of `table` to `out` under `prefix`.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::String(text) => {
                out.insert(key, text.clone());
            }
            toml::Value::Table(inner) => flatten(&key, inner, out),
            // Catalogs hold strings only; anything else is a mistake the unit test shows.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogs_parse_and_have_exactly_the_same_keys() {
        let en = Catalog::parse(include_str!("../../ui/i18n/en.toml")).expect("en.toml");
        let ja = Catalog::parse(include_str!("../../ui/i18n/ja.toml")).expect("ja.toml");
        let en_keys: Vec<&str> = en.keys().collect();
        let ja_keys: Vec<&str> = ja.keys().collect();
        assert!(en_keys.len() > 40, "{en_keys:?}");
        assert_eq!(en_keys, ja_keys, "en.toml and ja.toml must have the same keys");
        let raw_en: toml::Table = toml::from_str(include_str!("../../ui/i18n/en.toml")).unwrap();
        let count = |t: &toml::Table| t.values().map(|v| v.as_table().map_or(1, |t| t.len())).sum::<usize>();
        assert_eq!(count(&raw_en), en_keys.len(), "every entry is a string in a table");
    }

    #[test]
    fn the_contract_labels_are_exact() {
        for (key, en, ja) in [
            ("login.workspace", "Workspace", "ワークスペース"),
            ("login.email", "Email", "メールアドレス"),
            ("login.password", "Password", "パスワード"),
            ("login.submit", "Sign in", "サインイン"),
            ("reset.password", "Password", "パスワード"),
            ("reset.confirm", "Confirm password", "パスワード（確認）"),
        ] {
            assert_eq!(Lang::En.catalog().get(key), en);
            assert_eq!(Lang::Ja.catalog().get(key), ja);
        }
    }

    #[test]
    fn accept_language_picks_our_best_ranked_language() {
        assert_eq!(Lang::from_accept_language("ja-JP,ja;q=0.9,en;q=0.8"), Some(Lang::Ja));
        assert_eq!(Lang::from_accept_language("fr-FR, en-US;q=0.5, ja;q=0.7"), Some(Lang::Ja));
        assert_eq!(Lang::from_accept_language("en;q=0.1, ja;q=0"), Some(Lang::En));
        assert_eq!(Lang::from_accept_language("de, fr"), None);
        assert_eq!(Lang::from_accept_language(""), None);
        assert_eq!(Lang::parse("JA_jp"), Some(Lang::Ja));
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(Lang::En.catalog().with("policy.min_length", "n", 12), "at least 12 characters");
        assert_eq!(Lang::Ja.catalog().with("policy.min_length", "n", 12), "12 文字以上");
        assert_eq!(Lang::En.catalog().get("no.such.key"), "no.such.key");
    }
}
