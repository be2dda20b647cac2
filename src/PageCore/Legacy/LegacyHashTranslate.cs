namespace PageCore.Legacy;

/// <summary>
/// HISTORICAL, BROKEN: the hash MMU's translation as it read a slot without rechecking V after R, kept so that a test can
/// show each lie being caught. Reachable only through <see cref="HashMmu.LegacyUncheckedReads"/>.
/// </summary>
/// <remarks>
/// <para>Torn entry. The translation loads V, sees (valid, A), then loads R. Between the two loads an insert of B
/// evicts A's entry from that slot (CAS of V to locked B), stores B's R and publishes (valid, B). The R loaded is B's:
/// the translation answers address A with B's page and permission, an entry that never existed.</para>
/// <para>False multi-hit. The translation reads A's entry at slot i and scans on; A's entry is invalidated and A is
/// hashed again into slot j further along the scan. The scan sees A at i and at j and reports a multi-hit, although the
/// two were never valid at one instant.</para>
/// <para>Missed duplicate. Inserts scan once, before claiming a slot: two inserts of one address at once (what a
/// broken busy bit would allow) both find nothing, both claim and both publish, and the judge says nothing.</para>
/// <para>The fixed form: <see cref="HashMmu"/>'s ReadSlot, TryTranslate and ClaimedAlone.</para>
/// </remarks>
internal static class LegacyHashTranslate
{
    /// <summary>The translation without a recheck: V, then R, of every matching slot; a second match is a multi-hit.</summary>
    public static bool TryTranslate(HashMmu hash, int asid, ulong va, out Pfn pfn, out bool writable)
    {
        ulong valid = HashMmu.ValidTag(asid, va);
        pfn = default;
        writable = false;
        int hits = 0;
        for (int k = 0; k < 2; k++)
        {
            int first = hash.FirstSlot(asid, va, k);
            for (int i = first; i < first + HashMmu.SlotsPerGroup; i++)
            {
                if (hash.LoadV(i) == valid)
                {
                    hash.ProbeHook?.Invoke(HashProbe.TranslateMatched, i);
                    ulong r = hash.LoadR(i); // no recheck of V: the slot may hold another address's entry by now
                    hash.ProbeHook?.Invoke(HashProbe.TranslateSlotRead, i);
                    if (hits++ == 0)
                    {
                        pfn = new Pfn((uint)r);
                        writable = (r & (1UL << 63)) != 0;
                    }
                    else
                    {
                        hash.Violation($"T2: a translation of asid {asid} va 0x{va:x} matched two valid entries ({pfn} and pfn 0x{(uint)r:x}): a multi-hit");
                    }
                }
            }
        }

        return hits > 0;
    }
}
