/* Rule 1 (seed 000): a counter that a speculative getter can reach is never written with a plain store once the page
 * is published. Legacy (-DLEGACY): the PTE-fragment allocator counts fragments in the refcount with set_page_count,
 * over a PFN walker's get_page_unless_zero; the walker's put then takes someone else's reference. Fixed: fragments are
 * counted in pt_frag_refcount; the refcount sees only atomic gets and puts.
 * Checked: no put at zero (underflow), and the page is freed exactly once, never while a fragment is live. */
#define FRAGS 2

byte rc = 0;      /* page->_refcount */
byte frag = 0;    /* ptdesc->pt_frag_refcount (fixed form) */
byte live = 0;    /* fragments handed out and not freed */
bool freed = false;

inline put_page() {
  atomic {
    assert(rc > 0);                 /* no underflow */
    rc--;
    if
    :: rc == 0 -> assert(!freed && live == 0); freed = true
    :: else -> skip
    fi
  }
}

proctype Allocator() {
  rc = 1;                           /* alloc_page: published with refcount 1; walkers can reach it by PFN */
#ifdef LEGACY
  atomic { rc = FRAGS; live = FRAGS };   /* set_page_count(page, PTE_FRAG_NR): a plain store */
  live--; put_page();               /* pte_fragment_free: put_page_testzero */
  live--; put_page();
#else
  atomic { frag = FRAGS; live = FRAGS };
  atomic { live--; frag-- };
  atomic { live--; frag-- };
  if
  :: frag == 0 -> put_page()        /* the last fragment: the page-table page is freed */
  :: else -> skip
  fi
#endif
}

proctype Walker() {
  /* get_page_unless_zero on this PFN, at any moment */
  atomic {
    if
    :: rc > 0 -> rc++
    :: else -> goto done
    fi
  };
  put_page();                       /* not the page it wanted: put it back */
done:
  skip
}

init {
  atomic { run Allocator(); run Walker() }
}
