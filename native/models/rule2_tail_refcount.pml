/* Rule 2 (seed 002): a tail page's refcount is 0 at all times; gets and puts through a tail go to the head, and a
 * speculative getter takes the reference first, then rechecks that the page still belongs to that head.
 * Legacy (-DLEGACY): pre-2011 THP, a reference taken through a tail raises the tail's own count too, so a PFN walker's
 * get_page_unless_zero on the tail succeeds. Fixed: the walker's folio get (head, add-unless-zero, recheck) races a
 * split that freezes the head at the expected count.
 * Checked: a walker never holds a reference on a tail page, and never holds a folio its page left. */
byte head_rc = 1;      /* the owner's reference on the compound head */
byte tail_rc = 0;      /* the tail's own count: 0 in the fixed form */
bool linked = true;    /* tail->compound_head == head */

proctype Owner() {
#ifdef LEGACY
  atomic { head_rc++; tail_rc++ };   /* get_page(tail), pre-2011 */
  atomic { head_rc--; tail_rc-- };
#else
  atomic { head_rc++ };              /* get_page(tail) lands on the head */
  atomic { head_rc-- };
  /* split_huge_page: freeze at the expected count (the owner's 1), unlink the tail, unfreeze */
  atomic {
    if
    :: head_rc == 1 -> head_rc = 0
    :: else -> goto out              /* -EAGAIN: someone else holds a reference */
    fi
  };
  linked = false;
  head_rc = 1;                       /* unfreeze (release store) */
out:
  skip
#endif
}

proctype Walker() {
#ifdef LEGACY
  atomic {
    if
    :: tail_rc > 0 -> tail_rc++; assert(false)   /* a successful get on a tail page */
    :: else -> skip
    fi
  }
#else
  bool got = false;
  atomic {                            /* folio_try_get on the head the tail named */
    if
    :: linked && head_rc > 0 -> head_rc++; got = true
    :: else -> skip
    fi
  };
  if
  :: got ->
     if
     :: linked -> assert(linked); atomic { assert(head_rc > 0); head_rc-- }   /* holds the right folio, then puts */
     :: else -> atomic { assert(head_rc > 0); head_rc-- }                     /* recheck failed: put and report a miss */
     fi
  :: else -> skip
  fi;
  assert(tail_rc == 0)
#endif
}

init {
  atomic { run Owner(); run Walker() }
}
