//! CSV cells safe to open in a spreadsheet (OWASP "CSV injection"): a text cell that a
//! spreadsheet would read as a formula (it starts with `=`, `+`, `-`, `@`, a tab or a
//! carriage return) is written with a leading `'`, which spreadsheets show as text.
//! A cell that already starts with `'` gets one more, so [`unescape`] restores every
//! cell exactly (`keel audit verify --csv` hashes the restored values). A plain number
//! (`-5`, `+1.5`) is no formula and is written as it is.

/// Characters that make a spreadsheet evaluate a cell.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `cell` as written to a CSV export.
pub fn escape(cell: String) -> String {
    let risky = cell.starts_with('\'') || (cell.starts_with(FORMULA_STARTS) && !is_number(&cell));
    if risky { format!("'{cell}") } else { cell }
}

/// The value of a cell read back from a CSV export (the inverse of [`escape`]).
pub fn unescape(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

/// Whether `cell` is a plain decimal number: an optional sign, digits, optional fraction.
fn is_number(cell: &str) -> bool {
    let digits = cell.strip_prefix(['+', '-']).unwrap_or(cell);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_quoted_and_restored() {
        for risky in ["=HYPERLINK(\"http://x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx", "'quoted"] {
            let written = escape(risky.to_string());
            assert_eq!(written, format!("'{risky}"));
            assert_eq!(unescape(&written), risky);
        }
    }

    #[test]
    fn plain_cells_and_numbers_are_left_alone() {
        for plain in ["evt-1", "", "42", "-5", "+1.5", "tnt_01", "a=b", "{\"k\":\"=v\"}"] {
            assert_eq!(escape(plain.to_string()), plain);
            assert_eq!(unescape(plain), plain);
        }
        for not_a_number in ["-", "-.5", "-5.", "-5e3", "+-1"] {
            assert_eq!(escape(not_a_number.to_string()), format!("'{not_a_number}"));
        }
    }
}
