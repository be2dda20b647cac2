#!/usr/bin/env python3
"""Checks the arm64 JIT's code for PageCore's hot-path transitions.

Input: one DOTNET_JitDisasm dump per emulated CPU model, as NAME=FILE (run.sh makes them). For each transition it
asserts the instruction the protocol needs, per dump:
  acq   a Volatile.Read:  ldar* (RCsc) or ldapr*/ldapur* (RCpc)
  rel   a Volatile.Write: stlr*/stlur*
  rmw   an Interlocked RMW that is a full fence: an LSE atomic with both acquire and release (casal, swpal, ldaddal,
        ldclral, ldsetal, ...; a full barrier in Arm's model: aarch64.cat's bob has po; [A];amo;[L]; po), or an
        exclusive pair (ldaxr/stlxr) with a dmb ish after the store-exclusive before the next access
  fence Interlocked.MemoryBarrier: dmb ish
  rmw>acq  a full-fence RMW followed in program order by an acquire load (the small/huge handshake, the epoch announce)
Exit 0 when every requirement holds in every dump, 1 otherwise. --self-test checks the negative controls (the Scratch
methods, transitions with their ordering removed) against the real transitions' requirements and exits 0 only if
every one of them FAILS. --markdown FILE writes the table.
"""
import re
import sys

ACQ = re.compile(r"^ld(a|ap)u?r[bh]?$")          # ldar, ldarb, ldapr, ldapur, ... (not ldaxr)
REL = re.compile(r"^stl(u)?r[bh]?$")              # stlr, stlur, stlrb (not stlxr)
LSE_AL = re.compile(r"^(cas|swp|ldadd|ldclr|ldset|ldeor|ldsmax|ldsmin|ldumax|ldumin)al[bh]?$")
LSE_ANY = re.compile(r"^(cas|swp|ldadd|ldclr|ldset|ldeor|ldsmax|ldsmin|ldumax|ldumin|stadd|stclr|stset)[a-z]*$")
LDX = re.compile(r"^ld(a)?xr[bh]?$")
STX = re.compile(r"^st(l)?xr[bh]?$")
MEM = re.compile(r"^(ld|st|cas|swp|prfm)")

# Transition -> requirements. Method names as the JIT prints them, without namespace and signature.
EXPECT = [
    ("PageRef:Count", ["acq"]),
    ("PageRef:SetAllocated", ["rel"]),
    ("PageRef:Inc", ["rmw"]),
    ("PageRef:IncChecked", ["acq"]),  # then a call to TryGetUnlessZeroFrom (its CAS is checked there)
    ("PageRef:Add", ["acq", "rmw"]),
    ("PageRef:TryGetFromOne", ["rmw"]),
    ("PageRef:TryGetUnlessZeroFrom", ["rmw"]),
    ("PageRef:TryPutFromTwo", ["rmw"]),
    ("PageRef:PutUnlessLast", ["rmw"]),
    ("PageRef:PutTestZero", ["rmw"]),
    ("PageRef:TryPutLast", ["rmw"]),
    ("PageRef:Freeze", ["rmw"]),
    ("PageRef:Unfreeze", ["rel"]),
    ("PageRef:Pair", ["acq"]),        # the 8-byte acquire load of flags and count (checked mode's put)
    ("PageRef:TryPutPair", ["rmw"]),  # the 8-byte CAS over both
    ("PageCaches:EnterAsymmetric", ["rel", "acq"]),
    ("PageCaches:EnterSymmetric", ["rel", "fence", "acq"]),
    ("PageCaches:LeaveOwner", ["rel"]),
    ("PageCaches:AnnounceSteal", ["rel", "fence"]),  # symmetric form; the asymmetric one calls MemoryBarrierProcessWide
    ("FrameAllocator:TryClaimInWord", ["acq", "rmw>acq"]),  # small half: bit CAS, then ClaimStands' status load
    ("FrameAllocator:ClaimManyInWord", ["acq", "rmw>acq"]),
    ("FrameAllocator:ClaimStands", ["acq"]),
    ("FrameAllocator:TryClaimChunk", ["rmw", "rel"]),  # huge half: status CAS, then the words' loads (plain vector loads)
    ("FrameAllocator:ReleaseChunk", ["rel"]),
    ("FrameAllocator:ShrinkHugeChunkToHead", ["rel"]),
    ("FrameAllocator:TryEndHeadOnly", ["rmw"]),
    ("FrameAllocator:TryClaimWords", ["rmw", "rel"]),
    ("FrameAllocator:ClearBit", ["rmw"]),
    ("FrameAllocator:ClearRun", ["acq", "rmw"]),
    ("FrameAllocator:ClearWords", ["acq", "rel"]),
    ("FrameAllocator:ConvertHugeToBits", ["rmw", "rel"]),
    ("EpochDomain:Announce", ["acq", "rmw", "rel"]),  # symmetric: exchange; asymmetric: release store
    ("EpochDomain:Enter", ["rmw"]),
    ("EpochDomain:ScanFence", ["fence"]),  # symmetric; the asymmetric form calls MemoryBarrierProcessWide
    ("EpochDomain:Exit", ["rel"]),
    ("Sequences:EpochReaderSection", ["rmw>acq"]),  # a reader: Enter (inlined announce), then Volatile.Read
    ("Sequences:CasThenAcquire", ["rmw>acq"]),
    ("Sequences:ExchangeThenAcquire", ["rmw>acq"]),
]
# Negative controls: scratch copies with the ordering removed, held to the real transitions' requirements.
SELF_TEST = [
    ("Scratch:LeaveOwnerPlain", ["rel"]),
    ("Scratch:CountPlain", ["acq"]),
    ("Scratch:EnterSymmetricNoFence", ["fence"]),
]


def parse(path):
    """Method short name -> list of (mnemonic, operands)."""
    methods, cur = {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"; Assembly listing for method (\S+?)\(", line)
            if m:
                full = m.group(1)  # Namespace.Class:Method
                cls, meth = full.split(":", 1)
                cur = methods.setdefault(cls.split(".")[-1].split("+")[-1] + ":" + meth, [])
                continue
            if cur is None or line.startswith(";"):
                continue
            m = re.match(r"^\s+([a-z][a-z0-9.]*)\s*(.*)$", line)
            if m and not line.lstrip().startswith(("G_M", "RWD")):
                cur.append((m.group(1), m.group(2).strip()))
    return methods


def rmws(code):
    """Each RMW in code: (index of its last instruction, text, full_fence)."""
    out = []
    for i, (mn, ops) in enumerate(code):
        if LSE_ANY.match(mn):
            out.append((i, f"{mn} {ops}", bool(LSE_AL.match(mn))))
        elif STX.match(mn):
            # exclusive pair: full fence only with a dmb ish after the store-exclusive, before the next access
            fenced = False
            for mn2, ops2 in code[i + 1:]:
                if mn2 == "dmb" and ops2.startswith("ish") and not ops2.startswith(("ishld", "ishst")):
                    fenced = True
                    break
                if MEM.match(mn2):
                    break
            ldx = next((code[j][0] for j in range(i - 1, -1, -1) if LDX.match(code[j][0])), "ldxr")
            out.append((i, f"{ldx}/{mn}" + (" +dmb ish" if fenced else " (no dmb)"), fenced))
    return out


def check(code, req):
    """(ok, emitted summary) for one requirement."""
    if req == "acq":
        hits = sorted({mn for mn, _ in code if ACQ.match(mn)})
        return bool(hits), ",".join(hits) or "none"
    if req == "rel":
        hits = sorted({mn for mn, _ in code if REL.match(mn)})
        return bool(hits), ",".join(hits) or "none"
    if req == "fence":
        n = sum(1 for mn, ops in code if mn == "dmb" and ops == "ish")
        return n > 0, f"dmb ish x{n}" if n else "none"
    if req == "rmw":
        rs = rmws(code)
        kinds = sorted({re.sub(r" \[.*", "", t).split()[0] if "/" not in t else t for _, t, _ in rs})
        return bool(rs) and all(f for _, _, f in rs), ",".join(kinds) or "none"
    if req == "rmw>acq":
        pairs = []
        for i, text, full in rmws(code):
            j = next((k for k in range(i + 1, len(code)) if ACQ.match(code[k][0])), None)
            if j is not None:
                between = "/" not in text and any(code[k][0] == "dmb" for k in range(i + 1, j))
                kind = text.split()[0] if "/" not in text else text
                pairs.append((full, f"{kind} .. {'dmb ish .. ' if between else ''}{code[j][0]}"))
        return bool(pairs) and all(f for f, _ in pairs), "; ".join(sorted({p for _, p in pairs})) or "none"
    raise ValueError(req)


def run(expect, dumps):
    rows, failures = [], []
    for method, reqs in expect:
        for req in reqs:
            cells = []
            for name, methods in dumps:
                code = methods.get(method)
                if code is None:
                    ok, emitted = False, "not compiled"
                else:
                    ok, emitted = check(code, req)
                cells.append((ok, emitted))
                if not ok:
                    failures.append(f"{name}: {method} needs {req}, emitted {emitted}")
            rows.append((method, req, cells))
    return rows, failures


NEED = {"acq": "acquire load (ldar*/ldapr*)", "rel": "release store (stlr*)", "fence": "dmb ish",
        "rmw": "full-fence RMW (LSE *al, or ldaxr/stlxr + dmb ish)",
        "rmw>acq": "full-fence RMW, then acquire load"}


def main(argv):
    self_test, md = False, None
    args = []
    it = iter(argv)
    for a in it:
        if a == "--self-test":
            self_test = True
        elif a == "--markdown":
            md = next(it)
        else:
            args.append(a)
    dumps = [(a.split("=", 1)[0], parse(a.split("=", 1)[1])) for a in args]
    if not dumps:
        print(__doc__)
        return 2
    if self_test:
        rows, failures = run(SELF_TEST, dumps)
        missed = [(m, r, n) for m, r, cells in rows for (ok, _), (n, _) in zip(cells, dumps) if ok]
        print(f"jitcheck self-test: {len(failures)} of {len(rows) * len(dumps)} negative-control checks failed as they must")
        for f in failures:
            print(f"  caught: {f}")
        if missed:
            print(f"jitcheck self-test: NOT caught: {missed}")
            return 1
        return 0
    rows, failures = run(EXPECT, dumps)
    total = len(rows) * len(dumps)
    lines = ["| transition | instruction needed | " + " | ".join(n for n, _ in dumps) + " | ok |",
             "|---|---|" + "---|" * len(dumps) + "---|"]
    for method, req, cells in rows:
        ok = all(c[0] for c in cells)
        lines.append(f"| {method} | {NEED[req]} | " + " | ".join(
            (e if c else f"**{e} FAIL**") for c, e in cells) + f" | {'ok' if ok else 'FAIL'} |")
    if md:
        with open(md, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    for f in failures:
        print(f"FAIL {f}")
    print(f"jitcheck: {total - len(failures)} of {total} checks ok across {len(dumps)} CPU configurations")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
