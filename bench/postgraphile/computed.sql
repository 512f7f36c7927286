-- The fields usagegraph computes, as PostGraphile computed columns (a function of the row,
-- named <table>_<field>, in a schema of its own): the same rules as models/balances.py.
CREATE SCHEMA IF NOT EXISTS postgraphile_computed;

CREATE OR REPLACE FUNCTION postgraphile_computed.credit_pool_remaining(p public.credit_pool)
RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT p.purchased - p.used - p.expired $$;

CREATE OR REPLACE FUNCTION postgraphile_computed.credit_pool_unallocated(p public.credit_pool)
RETURNS bigint LANGUAGE sql STABLE
AS $$ SELECT p.purchased - p.used - p.expired - p.end_user_remaining $$;

CREATE OR REPLACE FUNCTION postgraphile_computed.credit_pool_status(p public.credit_pool)
RETURNS text LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN p.purchased - p.used - p.expired <= 0 THEN 'EXHAUSTED'
    WHEN p.purchased - p.used - p.expired <= p.low_balance_threshold THEN 'LOW'
    ELSE 'OK' END
$$;

-- The End User's own threshold, else its pool's default.
CREATE OR REPLACE FUNCTION postgraphile_computed.end_user_balance_effective_threshold(
  b public.end_user_balance
) RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT COALESCE(b.low_balance_threshold,
    (SELECT end_user_low_balance_threshold FROM public.credit_pool WHERE id = b.pool_id))
$$;
