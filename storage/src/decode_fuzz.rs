//! Hostile bytes against every decoder of stored data: arbitrary values for
//! group, producer and segment entries, and arbitrary metadata entries in a
//! store that is then reopened (the in-memory engine: recovery is the same
//! code whatever the engine, and thousands of reopens stay cheap). Recovery must either succeed or report
//! corruption; it must never panic or serve garbage as state.

use proptest::prelude::*;

use crate::engine::{AtomicWrite, Cf, Mutation};
use crate::group::{recover_entry, MessageState};
use crate::producer::ProducerState;
use crate::segment::SegmentMeta;
use crate::store::Store;
use crate::Error;
use crate::MemoryDisk;

/// Keys shaped like the real ones (a tag byte and a realistic length), and any keys at all.
fn key() -> impl Strategy<Value = Vec<u8>> {
    let shaped = (any::<u8>(), prop::sample::select(vec![0usize, 1, 8, 12, 13, 16, 17, 20, 21, 28, 40])).prop_flat_map(
        |(tag, len)| prop::collection::vec(any::<u8>(), len).prop_map(move |rest| [vec![tag], rest].concat()),
    );
    prop_oneof![shaped, prop::collection::vec(any::<u8>(), 0..64)]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..200)
}

/// Stores opened per run: `make test` runs the default, `make soak` many more
/// (SLUICE_DECODE_CASES). The pure decoders follow PROPTEST_CASES.
fn reopen_cases() -> u32 {
    std::env::var("SLUICE_DECODE_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(512)
}

proptest! {
    #[test]
    fn value_decoders_never_panic(k in key(), v in value(), base in any::<u64>()) {
        let _ = MessageState::decode(&v);
        let _ = ProducerState::decode(&v);
        let _ = SegmentMeta::decode(base, &v);
        let _ = recover_entry(&k, &v, &mut Default::default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: reopen_cases(), ..ProptestConfig::default() })]

    #[test]
    fn recovery_of_arbitrary_entries_reports_corruption_or_succeeds(
        entries in prop::collection::vec((any::<bool>(), key(), value()), 1..24)
    ) {
        let disk = MemoryDisk::new();
        {
            let (store, _) = Store::open_in_memory(&disk).expect("open empty store");
            let writes: Vec<Mutation> = entries
                .into_iter()
                .map(|(meta, k, v)| Mutation::Put(if meta { Cf::Meta } else { Cf::Groups }, k, v))
                .collect();
            store.apply(std::iter::once(&AtomicWrite::from(writes)), false).expect("write entries");
        }
        match Store::open_in_memory(&disk) {
            Ok(_) => {}
            Err(e) => prop_assert!(matches!(e, Error::MetaCorruption { .. }), "unexpected error {e}"),
        }
    }
}
