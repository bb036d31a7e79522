-- Issue 14: four eyes. How many different approvers a held grant needs, counted
-- when it was held (two above approvals.second_approver_above); 1 for every
-- other decision and for grants held before this migration (one approver then).
-- Who approved it so far is the approval_audit (action 'approve').
ALTER TABLE decisions
    ADD COLUMN approvals_needed smallint NOT NULL DEFAULT 1
        CHECK (approvals_needed BETWEEN 1 AND 2);
