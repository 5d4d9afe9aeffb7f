"""Mail access: everything a client does to mailboxes (IMAP, POP3, the web).

The package itself imports nothing, so that importing one of its modules
(the name rules, the search criteria the IMAP wire parses into) stays
cheap and cycle-free: take each name from its module (``service``,
``errors``, ``criteria``, ``search``, ``maildrop``, ``rights``, ``names``,
``index``).

Protocols call this package and nothing below it; it returns data objects
and raises service errors, and every byte of wire syntax stays with the
protocol. Everything blocks on the store: call it from a worker thread
(the protocols keep one shared pool), never on the event loop.

API (:class:`MailAccess`, one per protocol family of a process; ``user`` is
an authenticated ``name@domain``, ``name`` a mailbox name as the user
writes it, ``opened`` an :class:`Opened` from :meth:`~MailAccess.select` or
:meth:`~MailAccess.open`):

* ``ensure_inbox(account)``; ``open(user, name, need)`` -> :class:`Opened`
  (the target mailbox and the user's rights, CGP letters);
* ``select(user, name, examine)`` -> :class:`Selection` (counters, the
  UIDs, keywords, first unseen, where \\Recent starts; SELECT claims
  \\Recent); ``poll(opened, modseq, uidnext, claim)`` -> (:data:`Changes`,
  first recent UID); ``index(opened)`` -> the locked, current
  :class:`MailboxIndex` (UIDs, flags, sizes, dates arrays) for metadata
  fetches formatted in one loop;
* ``fetch(opened, pairs, FetchNeeds)`` -> :class:`FetchedBatch` of
  :class:`MessageData` (bytes, header bytes or the cached MIME parse),
  about :data:`FETCH_BATCH_BYTES` at a time; ``mark_seen(opened, messages)``;
* ``search(opened, uids, SearchKey, recent, uid_command)`` -> numbers or
  UIDs (criteria are :class:`SearchKey` / :class:`SequenceSet`,
  ``criteria.py``; evaluation ``search.py``);
* ``check_flags(opened, flags, mode)`` then ``store_flags(..., unchanged_since)``
  -> updates (``.modified``: refused by UNCHANGEDSINCE) and the MODSEQ of the
  change; ``expunge(opened, uids, quiet=)``;
* CONDSTORE/QRESYNC (``condstore.py``, RFC 7162): ``changed_pairs``,
  ``highest_modseq``, ``current_modseq``, ``vanished_since``, ``resync``, ``set_seen``;
  ``copy(user, source, uids, name, move=)`` -> :class:`Copied`;
  ``append(user, name, data, flags, date)`` -> :class:`Appended` (durable);
  ``append_many(user, name, [(data, flags, date), ...])`` -> :class:`AppendedMany`
  (MULTIAPPEND: one transaction, all or none); ``catenate.read_message(...)``
  -> the message a CATENATE URL names, if the user may read it;
* ``status(user, name, items)``; ``list_mailboxes(user, reference, patterns, lsub=,
  select=, returns=, status=, extended=, rev2=)`` -> :class:`Listed` entries with
  attributes and CHILDINFO (``listing.py``: RFC 5258, 5819, 6154, 9051);
* ``quota_root(user, name)``, ``get_quota(user, root)`` -> :class:`Quota`
  (``quota.py``: ``MaxAccountSize`` against the store's per-account usage);
  APPEND, COPY and MOVE over the limit raise :class:`OverQuota`;
* ``create``, ``delete``, ``rename`` (-> the :data:`MailboxKey` affected),
  ``subscribe``, ``unsubscribe``, ``subscriptions``, and the RFC 4314 ACL
  calls ``get_acl``, ``set_acl``, ``delete_acl``, ``list_rights``,
  ``my_rights`` (rights in RFC 4314 letters);
* POP3 (``maildrop.py``): :class:`Maildrops` ``open(account)`` ->
  :class:`Maildrop` (INBOX as at login, numbered, DELE marks), ``read``,
  ``delete`` at QUIT, and its :class:`MaildropLocks` (one session per
  maildrop); refusals are :class:`MaildropError`.

Errors (``errors.py``) are :class:`MailboxError` subclasses carrying their
RFC 5530 ``code`` (:class:`NoSuchMailbox`, :class:`NoPermission` with the
missing ``right``, :class:`TryCreate`, :class:`MailboxExists`, ...),
:class:`NotFound` for something gone while in use and :class:`StoreError`
when the store cannot answer. Which mailbox a name means and the rights
rules are ``rights.py`` (:class:`MailboxAccess`); which names a mailbox, an
alias or a subscription may have is ``names.py``, checked before the store
is called.
"""
