//! Paging by tenant id (the tenant list and the fleet view): page sizes and opaque cursors.

use base64::Engine;

use keel_domain::ids::TenantId;

use super::problem::Problem;

/// Largest page.
pub const MAX_LIMIT: i64 = 200;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: i64 = 50;

/// A page cursor naming the last tenant id of a page.
pub fn encode_cursor(tenant_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tenant_id)
}

/// The tenant id a cursor names, if it is one.
pub fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let id = String::from_utf8(bytes).ok()?;
    id.parse::<TenantId>().ok().map(|t| t.to_string())
}

/// The tenant id a page starts after (none for the first page), or `400 invalid_cursor`.
pub fn page_after(cursor: Option<&str>) -> Result<Option<String>, Problem> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => {
            decode_cursor(c).map(Some).ok_or_else(|| Problem::bad_request("invalid_cursor", "cursor is not valid"))
        }
    }
}

/// The page size asked for ([`DEFAULT_LIMIT`] if none), or `400 invalid_limit`.
pub fn page_limit(limit: Option<i64>) -> Result<i64, Problem> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::bad_request("invalid_limit", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = TenantId::from_ulid(ulid::Ulid::new()).to_string();
        assert_eq!(decode_cursor(&encode_cursor(&id)), Some(id));
        assert_eq!(decode_cursor("not base64!"), None);
        assert_eq!(decode_cursor(&encode_cursor("'; DROP TABLE x")), None);
    }
}
