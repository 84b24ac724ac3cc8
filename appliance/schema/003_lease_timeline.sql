-- Schema v3: the lease's epoch is bound to the database history it was issued on.

-- A takeover records the timeline of the database node it was written on. After a split brain of the
-- database (an old primary started again as a primary) the same epoch number could be issued on two
-- diverged histories; the pair (timeline, epoch) tells them apart. The agent writes to no stale node,
-- so this is a second line of defence: the fence file carries both to the primary-only services.
ALTER TABLE lease ADD COLUMN timeline bigint;
