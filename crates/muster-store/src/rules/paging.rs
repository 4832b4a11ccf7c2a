//! Lists a page at a time, newest first (or oldest first, for the lists kept in the order things
//! were added). A cursor is the row sequence number of the previous page's last item, so a page
//! reads the rows below it (above it, oldest first); one row more than the page holds is read to
//! know whether another page follows.

use crate::{Page, PageRequest, StoreError};

/// The row below which the page starts (`None`: from the newest).
pub(crate) fn page_start(page: &PageRequest) -> Result<Option<i64>, StoreError> {
    page.cursor
        .as_deref()
        .map(|text| {
            text.parse::<i64>()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| {
                    StoreError::Rejected(format!("cursor '{text}' is not one this server gave out"))
                })
        })
        .transpose()
}

/// Like [`page_start`], as a bound: from the newest is below every row.
pub(crate) fn page_start_bound(page: &PageRequest) -> Result<i64, StoreError> {
    Ok(page_start(page)?.unwrap_or(i64::MAX))
}

/// Like [`page_start`], for lists oldest first: the page starts above the cursor's row, and
/// from the oldest is above no row.
pub(crate) fn page_after_bound(page: &PageRequest) -> Result<i64, StoreError> {
    Ok(page_start(page)?.unwrap_or(0))
}

/// Rows a page reads: one more than it holds.
pub(crate) fn rows_to_read(page: &PageRequest) -> i64 {
    i64::from(page.limit).saturating_add(1)
}

/// The page made of `rows` (read newest first, [`rows_to_read`] of them at most), each decoded
/// by `decode` into its row sequence number and item. A row past the page is not decoded: it
/// only says that another page follows.
pub(crate) fn page_from_rows<Row, Item>(
    rows: impl IntoIterator<Item = Row>,
    page: &PageRequest,
    mut decode: impl FnMut(Row) -> Result<(i64, Item), StoreError>,
) -> Result<Page<Item>, StoreError> {
    let limit = page.limit as usize;
    let mut items = Vec::new();
    let mut last_seq = None;
    for row in rows {
        if items.len() == limit {
            return Ok(Page {
                items,
                next_cursor: last_seq.map(|seq: i64| seq.to_string()),
            });
        }
        let (seq, item) = decode(row)?;
        items.push(item);
        last_seq = Some(seq);
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(limit: u32, cursor: Option<&str>) -> PageRequest {
        PageRequest {
            limit,
            cursor: cursor.map(str::to_string),
        }
    }

    #[test]
    fn cursors_are_row_numbers_this_store_gave_out() {
        assert_eq!(page_start(&request(5, None)), Ok(None));
        assert_eq!(page_start(&request(5, Some("17"))), Ok(Some(17)));
        for bad in ["0", "-3", "x", ""] {
            assert!(
                matches!(
                    page_start(&request(5, Some(bad))),
                    Err(StoreError::Rejected(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(page_start_bound(&request(5, None)), Ok(i64::MAX));
        assert_eq!(page_after_bound(&request(5, None)), Ok(0));
        assert_eq!(page_after_bound(&request(5, Some("17"))), Ok(17));
        assert!(page_after_bound(&request(5, Some("x"))).is_err());
        assert_eq!(
            rows_to_read(&request(u32::MAX, None)),
            i64::from(u32::MAX) + 1
        );
    }

    #[test]
    fn a_full_page_points_at_the_next_and_its_extra_row_is_not_decoded() {
        let rows = vec![(9, Ok("nine")), (7, Ok("seven")), (4, Err("corrupt"))];
        let decode = |(seq, item): (i64, Result<&'static str, &'static str>)| {
            item.map(|item| (seq, item))
                .map_err(|problem| StoreError::Internal(problem.into()))
        };
        let page = page_from_rows(rows.clone(), &request(2, None), decode).expect("a page");
        assert_eq!(page.items, vec!["nine", "seven"]);
        assert_eq!(page.next_cursor.as_deref(), Some("7"));
        assert!(page_from_rows(rows.clone(), &request(3, None), decode).is_err());
        let last = page_from_rows(rows[..2].to_vec(), &request(2, None), decode).expect("a page");
        assert_eq!(last.next_cursor, None, "nothing follows");
        let empty = page_from_rows(Vec::new(), &request(0, None), decode).expect("a page");
        assert!(empty.items.is_empty() && empty.next_cursor.is_none());
    }
}
