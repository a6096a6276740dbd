//! `wt-available-protocols` values (RFC 8941 Lists of Strings) against an independent
//! parser, the `sfv` crate, run in its RFC 8941 mode so that RFC 9651's Dates (`@`) and
//! Display Strings (`%"`) are syntax errors there as they are here.
//!
//! Where the two could legitimately differ, they don't: both discard leading SP only (a
//! leading tab is an error in both), both take OWS (SP or tab) after a member and around
//! commas, both return an empty List for an empty or all-SP value, and `sfv` documents no
//! deviation from the RFC. So the comparison is exact:
//! - `sfv` rejects the value: ours must reject it too;
//! - a List of Strings (with any parameters): ours returns the same strings in order;
//! - a List with another member type: ours says which member, the first one.
#![no_main]

use ferrovia::wire::sfv::{parse_string_list, SfvError};
use libfuzzer_sys::fuzz_target;
use sfv_crate::{BareItem, Item, List, ListEntry, Parser, Version};

fuzz_target!(|data: &[u8]| {
    // Header values reach the parser as `String` after QPACK decoding.
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let ours = parse_string_list(value);
    let theirs = Parser::new(value)
        .with_version(Version::Rfc8941)
        .parse::<List>();
    match theirs {
        Err(e) => assert!(
            ours.is_err(),
            "{value:?}: sfv rejects it ({e}), ours gives {ours:?}"
        ),
        Ok(list) => {
            let mut strings = Vec::new();
            let mut first_other = None;
            for (i, entry) in list.iter().enumerate() {
                match entry {
                    ListEntry::Item(Item {
                        bare_item: BareItem::String(s),
                        ..
                    }) => strings.push(s.as_str().to_owned()),
                    _ => {
                        first_other.get_or_insert(i);
                    }
                }
            }
            let expected = match first_other {
                Some(i) => Err(SfvError::NotAString(i)),
                None => Ok(strings),
            };
            assert_eq!(ours, expected, "{value:?} parses as {list:?}");
        }
    }
});
