//! RFC 7386 JSON merge patches over `serde_json::Value`: apply, compose and diff.
//!
//! Every DIFF `rtn_data` carries merge patches on the client's tree, so these three operations
//! are the whole data model of a session: the server [`diff`]s snapshots into patches, a session
//! composes them (see [`ComposedPatch`]) until the client peeks, and clients [`apply`] them.
//!
//! ## Why composition yields up to two patches
//! Merge patches are not closed under composition. With `t = {"k":{"a":1}}`, `p1 = {"k":5}`
//! and `p2 = {"k":{"b":2}}`, applying p1 then p2 gives `{"k":{"b":2}}`, but no single merge
//! patch does that for every target: `{"k":{"b":2}}` alone keeps `a`, and a patch can only
//! replace an object wholesale with a non-object. The exact composition is "delete `k`, then
//! merge `{"k":{"b":2}}`", i.e. two patches. DIFF allows this: the `data` array of one
//! `rtn_data` is one transaction of patches applied in order. So [`ComposedPatch`] holds a
//! *reset* patch (only `null`s, at the paths that changed from a non-object to an object) and a
//! *merge* patch. The reset part is empty unless a path changes type inside one pending batch,
//! which the server's trees never do, so in practice clients receive exactly one patch.

use super::size;
use serde_json::{Map, Value};

/// Applies `patch` to `target` as RFC 7386 `MergePatch(target, patch)`: an object patch merges
/// member by member (`null` deletes, a non-object target first becomes `{}`); any other patch
/// replaces the target. Arrays are values, never merged.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in fields {
            if v.is_null() {
                t.remove(k);
            } else if let Some(slot) = t.get_mut(k) {
                apply(slot, v);
            } else {
                t.insert(k.clone(), materialize(v));
            }
        }
    }
}

/// What applying `patch` to a missing value gives: the patch with the `null` members of its
/// objects removed, recursively (arrays are kept as they are, nulls inside them included).
pub fn materialize(patch: &Value) -> Value {
    match patch {
        Value::Object(fields) => Value::Object(
            fields.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), materialize(v))).collect(),
        ),
        other => other.clone(),
    }
}

/// The smallest merge patch turning `old` into `new`, or `None` if they are equal. Members
/// missing from `new` become `null`; changed non-objects and arrays are sent whole.
///
/// A merge patch cannot store a `null`: a `null` member of `new` comes out as a deletion, so
/// the result is exact only for trees without `null` values (the server's trees have none;
/// absent levels are sent as `"-"` or left out).
pub fn diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(p) = diff(ov, nv) {
                            patch.insert(k.clone(), p);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if old == new => None,
        _ => Some(new.clone()),
    }
}

/// Several merge patches composed into at most two (see the module docs): applying
/// [`ComposedPatch::patches`] in order equals applying every pushed patch in order, for every
/// target. Its size is bounded by the size of the tree the patches describe, never by how many
/// were pushed, and it tracks an upper bound of its serialized size ([`size::estimate`]) in
/// O(1) per changed member, so a session can be bounded without serializing.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposedPatch {
    /// `None`, or `Some(Null)` (reset the root), or a tree of objects whose leaves are `null`:
    /// paths to delete before `merge` applies. Every path in it is an object path of `merge`.
    reset: Option<Value>,
    /// The merged patch; `None` is the identity (nothing pending). `{}` is not the identity:
    /// applied to a non-object it gives `{}`.
    merge: Option<Value>,
    /// `size::estimate` of `merge` (0 for `None`), kept up to date incrementally.
    merge_bytes: usize,
    /// `size::estimate` of the reset patch (recomputed only when it changes, which is rare).
    reset_bytes: usize,
}

impl Default for ComposedPatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ComposedPatch {
    /// The empty composition (the identity).
    pub fn new() -> Self {
        Self { reset: None, merge: None, merge_bytes: 0, reset_bytes: 0 }
    }

    /// True when nothing was pushed since creation.
    pub fn is_empty(&self) -> bool {
        self.merge.is_none()
    }

    /// Upper bound of the serialized size of [`Self::patches`] (each patch plus a comma).
    pub fn estimated_bytes(&self) -> usize {
        let part = |present: bool, bytes: usize| if present { bytes + 1 } else { 0 };
        part(self.merge.is_some(), self.merge_bytes) + part(self.reset.is_some(), self.reset_bytes)
    }

    /// Composes `patch` after everything pushed so far.
    pub fn push(&mut self, patch: &Value) {
        let (Value::Object(p), Some(Value::Object(m))) = (patch, &mut self.merge) else {
            let (merge, reset) = match (patch, &self.merge) {
                // The root was replaced by a non-object and now an object merges onto it: the
                // result is exactly the object without its nulls, whatever the target was.
                (Value::Object(_), Some(_)) => (materialize(patch), Some(Value::Null)),
                // Nothing pending, or a non-object patch that replaces the whole target:
                // nothing before it matters.
                _ => (patch.clone(), None),
            };
            self.merge_bytes = size::estimate(&merge);
            self.merge = Some(merge);
            self.set_reset(reset);
            return;
        };
        let exact = matches!(self.reset, Some(Value::Null));
        let mut reset_changed = false;
        let mut delta: i64 = 0;
        let r = match &mut self.reset {
            Some(Value::Object(r)) => Some(r),
            _ => None,
        };
        let added = compose_map(m, r, p, exact, &mut delta, &mut reset_changed);
        if !added.is_empty() {
            self.reset = Some(Value::Object(added));
        }
        if matches!(&self.reset, Some(Value::Object(r)) if r.is_empty()) {
            self.reset = None;
        }
        if reset_changed {
            self.reset_bytes = self.reset.as_ref().map_or(0, size::estimate);
        }
        self.merge_bytes = (self.merge_bytes as i64 + delta) as usize;
    }

    /// The patches to send, in order: the reset patch (if any), then the merge patch.
    pub fn patches(&self) -> impl Iterator<Item = &Value> {
        self.reset.iter().chain(self.merge.iter())
    }

    /// Consumes the composition into the patches to send, in order.
    pub fn into_patches(self) -> Vec<Value> {
        self.reset.into_iter().chain(self.merge).collect()
    }

    /// Applies the composition to `target` (what a client does with one `rtn_data`).
    pub fn apply_to(&self, target: &mut Value) {
        for p in self.patches() {
            apply(target, p);
        }
    }

    fn set_reset(&mut self, reset: Option<Value>) {
        self.reset_bytes = reset.as_ref().map_or(0, size::estimate);
        self.reset = reset;
    }
}

/// Composes object patch `p` into merged object `m` whose reset node is `r`. `exact` means `m`
/// describes its whole subtree (an ancestor is reset or was created by this composition), so
/// nulls simply remove members and no reset is needed below. Returns reset entries for this
/// node when `r` is `None` (the caller creates the node); adds them to `r` otherwise.
fn compose_map(
    m: &mut Map<String, Value>,
    mut r: Option<&mut Map<String, Value>>,
    p: &Map<String, Value>,
    exact: bool,
    delta: &mut i64,
    reset_changed: &mut bool,
) -> Map<String, Value> {
    let mut new_resets = Map::new();
    let mut add_reset = |r: Option<&mut Map<String, Value>>, k: &str, v: Value| {
        match r {
            Some(r) => r.insert(k.to_owned(), v),
            None => new_resets.insert(k.to_owned(), v),
        };
    };
    for (k, pv) in p {
        match pv {
            Value::Object(pf) => match m.get_mut(k) {
                Some(Value::Object(mf)) => {
                    let reset_here = r.as_deref().and_then(|r| r.get(k));
                    let child_exact = exact || matches!(reset_here, Some(Value::Null));
                    let child_r = r.as_deref_mut().and_then(|r| r.get_mut(k)).and_then(Value::as_object_mut);
                    let has_child_r = child_r.is_some();
                    let added = compose_map(mf, child_r, pf, child_exact, delta, reset_changed);
                    if !added.is_empty() {
                        add_reset(r.as_deref_mut(), k, Value::Object(added));
                    } else if has_child_r {
                        if let Some(r) = r.as_deref_mut() {
                            if r.get(k).and_then(Value::as_object).is_some_and(Map::is_empty) {
                                r.remove(k);
                                *reset_changed = true;
                            }
                        }
                    }
                }
                Some(old) => {
                    // An earlier patch set `k` to a non-object; now an object merges onto it,
                    // which starts from {}: the result is exact, and the target's old value at
                    // `k` must be deleted first unless an ancestor already is.
                    let new = materialize(pv);
                    *delta += size::estimate(&new) as i64 - size::estimate(old) as i64;
                    *old = new;
                    if !exact {
                        add_reset(r.as_deref_mut(), k, Value::Null);
                        *reset_changed = true;
                    }
                }
                None => {
                    // Unknown target at `k` unless exact: keep the nulls, they delete there.
                    let new = if exact { materialize(pv) } else { pv.clone() };
                    *delta += size::member(k, &new) as i64;
                    m.insert(k.clone(), new);
                }
            },
            _ => {
                if exact && pv.is_null() {
                    if let Some(old) = m.remove(k) {
                        *delta -= size::member(k, &old) as i64;
                    }
                } else if let Some(old) = m.get_mut(k) {
                    *delta += size::estimate(pv) as i64 - size::estimate(old) as i64;
                    *old = pv.clone();
                } else {
                    *delta += size::member(k, pv) as i64;
                    m.insert(k.clone(), pv.clone());
                }
                // `k` is now fully determined by this patch: no reset needed at or below it.
                if let Some(r) = r.as_deref_mut() {
                    if r.remove(k).is_some() {
                        *reset_changed = true;
                    }
                }
            }
        }
    }
    if !new_resets.is_empty() {
        *reset_changed = true;
    }
    new_resets
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Random JSON with few keys (so patches collide with targets), some nulls, nested objects.
    pub(crate) fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..1000).prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // At most 12 significant digits: serde_json (without its `float_roundtrip`
            // feature) reads such decimals back exactly, so text round trips compare equal.
            (-100_000_000_000i64..100_000_000_000).prop_map(|n| Value::from(n as f64 / 1000.0)),
            "[a-c\"\\\\\n\u{1}é]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                proptest::collection::btree_map("[a-d]", inner.clone(), 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                proptest::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn applied(t: &Value, ps: &[&Value]) -> Value {
        let mut t = t.clone();
        for p in ps {
            apply(&mut t, p);
        }
        t
    }

    fn composed(ps: &[Value]) -> ComposedPatch {
        let mut c = ComposedPatch::new();
        for p in ps {
            c.push(p);
        }
        c
    }

    fn check_bytes(c: &ComposedPatch) {
        let real: usize = c.patches().map(size::estimate).map(|n| n + 1).sum();
        assert_eq!(c.estimated_bytes(), real, "{c:?}");
    }

    #[test]
    fn rfc7386_appendix_a_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (t, p, want) in cases {
            assert_eq!(applied(&t, &[&p]), want, "apply({t}, {p})");
        }
    }

    #[test]
    fn object_over_scalar_needs_a_reset_patch() {
        let t = json!({"k":{"a":1}});
        let c = composed(&[json!({"k":5}), json!({"k":{"b":2,"c":null}})]);
        assert_eq!(c.clone().into_patches(), vec![json!({"k":null}), json!({"k":{"b":2}})]);
        let mut got = t.clone();
        c.apply_to(&mut got);
        assert_eq!(got, json!({"k":{"b":2}}));
        // Setting `k` to a scalar again drops the reset: one patch.
        let mut c = c;
        c.push(&json!({"k":7}));
        assert_eq!(c.into_patches(), vec![json!({"k":7})]);
    }

    #[test]
    fn nested_reset_is_kept_and_pruned() {
        let t = json!({"a":{"b":{"x":1},"y":2}});
        let ps = [json!({"a":{"b":5}}), json!({"a":{"b":{"c":1}}}), json!({"a":{"b":{"d":null,"e":2},"z":3}})];
        let c = composed(&ps);
        assert_eq!(c.clone().into_patches(), vec![json!({"a":{"b":null}}), json!({"a":{"b":{"c":1,"e":2},"z":3}})]);
        let mut got = t.clone();
        c.apply_to(&mut got);
        assert_eq!(got, applied(&t, &ps.iter().collect::<Vec<_>>()));
        check_bytes(&c);
        // Setting `a.b` to a scalar makes the reset node empty: it is pruned, one patch remains.
        let mut c = c;
        c.push(&json!({"a":{"b":false}}));
        assert_eq!(c.clone().into_patches(), vec![json!({"a":{"b":false,"z":3}})]);
        check_bytes(&c);
    }

    #[test]
    fn null_in_second_stays_a_delete() {
        let c = composed(&[json!({"q":{"a":1,"b":2}}), json!({"q":{"a":null}})]);
        assert_eq!(c.into_patches(), vec![json!({"q":{"a":null,"b":2}})]);
    }

    #[test]
    fn root_scalar_then_object_resets_root() {
        let c = composed(&[json!(3), json!({"a":{"b":null,"c":1}})]);
        assert_eq!(c.clone().into_patches(), vec![json!(null), json!({"a":{"c":1}})]);
        let mut t = json!({"x":1});
        c.apply_to(&mut t);
        assert_eq!(t, json!({"a":{"c":1}}));
    }

    #[test]
    fn empty_and_identity() {
        let mut c = ComposedPatch::new();
        assert!(c.is_empty());
        assert_eq!(c.patches().count(), 0);
        check_bytes(&c);
        // `{}` is not a no-op: it turns a non-object into {}.
        c.push(&json!({}));
        assert!(!c.is_empty());
        let mut t = json!([1]);
        c.apply_to(&mut t);
        assert_eq!(t, json!({}));
        c.push(&json!({"a":1}));
        assert_eq!(c.into_patches(), vec![json!({"a":1})]);
    }

    #[test]
    fn diff_examples() {
        assert_eq!(diff(&json!({"a":1}), &json!({"a":1})), None);
        assert_eq!(
            diff(&json!({"a":1,"b":{"c":1,"d":2}}), &json!({"b":{"c":1,"d":3},"e":[1]})),
            Some(json!({"a":null,"b":{"d":3},"e":[1]}))
        );
        assert_eq!(diff(&json!([1]), &json!([1, 2])), Some(json!([1, 2])));
        assert_eq!(diff(&json!(1), &json!({"a":1})), Some(json!({"a":1})));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn compose_of_two_equals_sequential_apply(t in arb_json(), p1 in arb_json(), p2 in arb_json()) {
            let c = composed(&[p1.clone(), p2.clone()]);
            let mut got = t.clone();
            c.apply_to(&mut got);
            prop_assert_eq!(got, applied(&t, &[&p1, &p2]));
            prop_assert!(c.patches().count() <= 2);
            check_bytes(&c);
        }

        #[test]
        fn compose_of_many_equals_sequential_apply(
            t in arb_json(),
            ps in proptest::collection::vec(arb_json(), 0..8),
        ) {
            let c = composed(&ps);
            let mut got = t.clone();
            c.apply_to(&mut got);
            let refs: Vec<&Value> = ps.iter().collect();
            prop_assert_eq!(got, applied(&t, &refs));
            prop_assert!(c.patches().count() <= 2);
            check_bytes(&c);
        }

        #[test]
        fn diff_then_apply_gives_new(old in arb_json(), new in arb_json()) {
            // A merge patch cannot express a stored null: compare on trees without them.
            let new = materialize(&new);
            match diff(&old, &new) {
                None => prop_assert_eq!(&old, &new),
                Some(p) => prop_assert_eq!(applied(&old, &[&p]), new),
            }
        }

        #[test]
        fn diff_of_equal_is_none(v in arb_json()) {
            prop_assert_eq!(diff(&v, &v), None);
        }

        #[test]
        fn materialize_is_apply_to_missing(p in arb_json()) {
            prop_assert_eq!(materialize(&p), applied(&Value::Null, &[&p]));
        }
    }
}
