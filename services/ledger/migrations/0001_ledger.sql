CREATE TABLE transactions (
    txn_id      text PRIMARY KEY,
    tenant      text NOT NULL,
    description text NOT NULL,
    booked_at   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE entries (
    txn_id         text    NOT NULL REFERENCES transactions (txn_id),
    line           integer NOT NULL,
    tenant         text    NOT NULL,
    ledger_account text    NOT NULL,
    amount         bigint  NOT NULL CHECK (amount <> 0),
    currency       char(3) NOT NULL,
    PRIMARY KEY (txn_id, line)
);
CREATE INDEX entries_by_account ON entries (tenant, ledger_account, currency);

-- Balanced or nothing: checked at commit, per transaction and currency.
CREATE FUNCTION check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM entries WHERE txn_id = NEW.txn_id
        GROUP BY currency HAVING sum(amount) <> 0
    ) THEN
        RAISE EXCEPTION 'ledger transaction % does not balance', NEW.txn_id;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_balanced();

-- Immutable: entries and transactions are never updated or deleted.
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only (% on %)', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER entries_immutable BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER transactions_immutable BEFORE UPDATE OR DELETE ON transactions
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TABLE credits (
    credit_id  text PRIMARY KEY,
    offer_id   text NOT NULL UNIQUE,
    tenant     text NOT NULL,
    account    text NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    currency   char(3) NOT NULL,
    granted_at timestamptz NOT NULL,
    expires_at timestamptz
);
CREATE INDEX credits_by_account ON credits (tenant, account);
