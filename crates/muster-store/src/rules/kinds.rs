//! Job kinds' result rules as the store keeps them: listed by kind name in byte order, a page
//! at a time, with a cursor that carries the previous page's last kind; and the refusals by name.

use crate::{KindSettingsRecord, Page, PageRequest, StoreError};

pub(crate) fn kind_settings_not_found(kind: &str) -> StoreError {
    StoreError::NotFound(format!("settings of kind {kind}"))
}

/// A result schema as stored: JSON text.
pub(crate) fn result_schema_to_text(settings: &KindSettingsRecord) -> Option<String> {
    settings.result_schema.as_ref().map(ToString::to_string)
}

/// The cursor after `kind`: `k` and the kind's bytes in lowercase hex.
fn cursor_after(kind: &str) -> String {
    let mut cursor = String::with_capacity(1 + kind.len() * 2);
    cursor.push('k');
    for byte in kind.bytes() {
        cursor.push_str(&format!("{byte:02x}"));
    }
    cursor
}

/// The kind after which the page starts (`None`: from the first).
pub(crate) fn page_after_kind(page: &PageRequest) -> Result<Option<String>, StoreError> {
    page.cursor
        .as_deref()
        .map(|text| {
            decode_cursor(text).ok_or_else(|| {
                StoreError::Rejected(format!("cursor '{text}' is not one this server gave out"))
            })
        })
        .transpose()
}

fn decode_cursor(text: &str) -> Option<String> {
    let hex = text.strip_prefix('k')?;
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&hex[index..index + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The page made of `rows` (read by kind, [`crate::rules::paging::rows_to_read`] of them at
/// most), each decoded by `decode`. A row past the page is not decoded: it only says that
/// another page follows.
pub(crate) fn page_from_rows<Row>(
    rows: impl IntoIterator<Item = Row>,
    page: &PageRequest,
    mut decode: impl FnMut(Row) -> Result<KindSettingsRecord, StoreError>,
) -> Result<Page<KindSettingsRecord>, StoreError> {
    let limit = page.limit as usize;
    let mut items: Vec<KindSettingsRecord> = Vec::new();
    for row in rows {
        if items.len() == limit {
            return Ok(Page {
                next_cursor: items.last().map(|last| cursor_after(&last.kind)),
                items,
            });
        }
        items.push(decode(row)?);
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cursor: Option<&str>) -> PageRequest {
        PageRequest {
            limit: 5,
            cursor: cursor.map(str::to_string),
        }
    }

    #[test]
    fn cursors_carry_the_last_kind_and_others_are_rejected() {
        for kind in ["", "a", "é", "build/x86 64"] {
            let cursor = cursor_after(kind);
            assert_eq!(
                page_after_kind(&request(Some(&cursor))),
                Ok(Some(kind.into()))
            );
        }
        assert_eq!(page_after_kind(&request(None)), Ok(None));
        for bad in ["", "61", "k6", "kzz", "kff", "17"] {
            assert!(
                matches!(
                    page_after_kind(&request(Some(bad))),
                    Err(StoreError::Rejected(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            kind_settings_not_found("build"),
            StoreError::NotFound("settings of kind build".into())
        );
    }
}
