//! The names just before and just after a name in canonical order (RFC 4034 section 6.1),
//! as RFC 4471 derives them, for an NSEC record that covers one absent name and nothing
//! else (the "white lies" of RFC 4470).
//!
//! For a name `l.P` (first label `l`, parent `P`), the name after `l.P` and all its
//! descendants is `l\000.P` (or `l` with its last byte raised when `l` is full), and the name
//! before it is `l` with its last byte lowered, padded with `\255` to a full label: the
//! greatest label below `l`. Names below that padded label could still lie between the two,
//! so when the zone holds that name (or anything under it: every ancestor of a zone name is a
//! node) the predecessor becomes its deepest descendant, labels of `\255` up to 255 bytes,
//! after which no name can follow. Upper-case letters never appear in a canonical name, so
//! raising or lowering a byte steps over `A`-`Z`.

use hickory_proto::rr::Name;

const MAX_LABEL: usize = 63;
const MAX_NAME: usize = 255;

/// Bytes of `name` in wire form.
fn wire_len(name: &Name) -> usize {
    name.iter().map(|l| l.len() + 1).sum::<usize>() + 1
}

fn build(first: &[&[u8]], parent: &Name) -> Name {
    let labels: Vec<&[u8]> = first.iter().copied().chain(parent.iter()).collect();
    let mut name = Name::from_labels(labels).expect("labels within the limits of a name");
    name.set_fqdn(true);
    name
}

/// The byte before `b` among the bytes of canonical names (`@` before `[`).
fn lower_byte(b: u8) -> u8 {
    if b == b'[' {
        b'@'
    } else {
        b - 1
    }
}

/// The byte after `b` among the bytes of canonical names (`[` after `@`).
fn raise_byte(b: u8) -> u8 {
    if b == b'@' {
        b'['
    } else {
        b + 1
    }
}

/// The least name after `name` that is not `name` or below it; `None` when no name can
/// follow (only `\255` labels of full length up to the root).
pub fn after_subtree(name: &Name) -> Option<Name> {
    let mut labels = name.iter();
    let first = labels.next()?;
    let parent = name.base_name();
    if first.len() < MAX_LABEL && wire_len(name) < MAX_NAME {
        let mut label = first.to_vec();
        label.push(0);
        return Some(build(&[&label], &parent));
    }
    let mut label = first.to_vec();
    while label.last() == Some(&0xff) {
        label.pop();
    }
    match label.last_mut() {
        Some(last) => {
            *last = raise_byte(*last);
            Some(build(&[&label], &parent))
        }
        // A label of `\255` alone: nothing under the parent follows it.
        None => after_subtree(&parent),
    }
}

/// The greatest name before `name` with nothing in between that `exists` (the zone's
/// nodes) reports. `name` has a parent (it is below some zone apex).
pub fn before(name: &Name, exists: impl Fn(&Name) -> bool) -> Name {
    let first = name.iter().next().expect("a name below an apex");
    let parent = name.base_name();
    if first == [0] {
        // `\000` is the least label: the parent itself comes just before it.
        return parent;
    }
    let mut label = first.to_vec();
    let last = label.pop().expect("labels are not empty");
    if last != 0 {
        label.push(lower_byte(last));
        // As long a label as the name's length allows (a longer one could not exist).
        let room = (MAX_NAME - wire_len(&parent) - 1).min(MAX_LABEL);
        label.resize(room.max(label.len()), 0xff);
    }
    let sibling = build(&[&label], &parent);
    if last != 0 && !exists(&sibling) {
        return sibling;
    }
    deepest_under(&sibling)
}

/// The last name below `name` in canonical order: `\255` labels as long as names may be.
fn deepest_under(name: &Name) -> Name {
    let full = [0xffu8; MAX_LABEL];
    let mut labels: Vec<&[u8]> = Vec::new();
    let mut len = wire_len(name);
    while len + 2 <= MAX_NAME {
        let take = (MAX_NAME - len - 1).min(MAX_LABEL);
        labels.push(&full[..take]);
        len += take + 1;
    }
    build(&labels, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnssec::canonical_order;
    use std::cmp::Ordering;

    fn n(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn covers(owner: &Name, next: &Name, name: &Name) {
        assert_eq!(
            canonical_order(owner, name),
            Ordering::Less,
            "{owner} < {name}"
        );
        assert_eq!(
            canonical_order(name, next),
            Ordering::Less,
            "{name} < {next}"
        );
    }

    #[test]
    fn lies_cover_the_name_and_its_subtree_only() {
        let none = |_: &Name| false;
        for text in [
            "exam.example.",
            "a.example.",
            "b.c.example.",
            "*.example.",
            "0.example.",
        ] {
            let name = n(text);
            let (owner, next) = (before(&name, none), after_subtree(&name).unwrap());
            covers(&owner, &next, &name);
            covers(&owner, &next, &n(&format!("deep.below.{text}")));
            assert!(wire_len(&owner) <= MAX_NAME);
        }
        assert_eq!(
            after_subtree(&n("exam.example.")).unwrap(),
            build(&[b"exam\0"], &n("example."))
        );
        let owner = before(&n("exam.example."), none);
        let first = owner.iter().next().unwrap();
        assert_eq!(&first[..4], b"exal");
        assert_eq!(first.len(), 63);
        assert!(first[4..].iter().all(|&b| b == 0xff));
        // `*` (0x2a) is preceded by `)`.
        assert_eq!(
            before(&n("*.example."), none).iter().next().unwrap()[0],
            b')'
        );
    }

    #[test]
    fn steps_over_upper_case_and_the_least_label() {
        let none = |_: &Name| false;
        let owner = before(&build(&[b"a["], &n("example.")), none);
        assert_eq!(&owner.iter().next().unwrap()[..2], b"a@");
        let full = [b'@'; 63];
        let next = after_subtree(&build(&[&full], &n("example."))).unwrap();
        assert_eq!(next.iter().next().unwrap()[62], b'[');
        assert_eq!(
            before(&build(&[b"\0"], &n("example.")), none),
            n("example.")
        );
    }

    #[test]
    fn an_existing_sibling_sends_the_owner_below_it() {
        // `abc\000` comes just after the subtree of `abc`, which exists.
        let name = build(&[b"abc\0"], &n("example."));
        let owner = before(&name, |_| true);
        assert!(owner.zone_of(&n("abc.example.")) || n("abc.example.").zone_of(&owner));
        assert_eq!(wire_len(&owner), MAX_NAME);
        covers(&owner, &after_subtree(&name).unwrap(), &name);
        assert_eq!(
            canonical_order(&n("zzz.abc.example."), &owner),
            Ordering::Less
        );
        // A sibling that is a node (of some name below it) does the same.
        let owner = before(&n("b.example."), |s| s.iter().next().unwrap()[0] == b'a');
        assert_eq!(wire_len(&owner), MAX_NAME);
        covers(
            &owner,
            &after_subtree(&n("b.example.")).unwrap(),
            &n("b.example."),
        );
    }

    #[test]
    fn long_names_stay_within_255_bytes() {
        let label = [b'x'; 63];
        let parent = build(&[&label, &label, &label], &n("ex."));
        let name = build(
            &[b"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu"],
            &parent,
        );
        assert!(wire_len(&name) <= MAX_NAME);
        let owner = before(&name, |_| false);
        let next = after_subtree(&name).unwrap();
        assert!(wire_len(&owner) <= MAX_NAME && wire_len(&next) <= MAX_NAME);
        covers(&owner, &next, &name);
    }
}
