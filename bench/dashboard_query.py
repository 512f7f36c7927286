"""The dashboard query: everything a usage dashboard shows in one document. The benchmark
`bench.dashboard` drives it, and the statement-count, query-cost and fast-path tests send
this same document."""

DASHBOARD = """
query Dashboard($id: ID!, $from: DateTime!, $to: DateTime!) {
  application(id: $id) {
    name
    pools {
      key purchased allocated used remaining expired unallocated status
      packs(first: 5) { credits expiresAt }
      consumption(from: $from, to: $to, granularity: DAY) {
        totalUsed totalExpired buckets { start used expired purchased remaining spike }
      }
    }
    allocationSummary(pool: "ai") {
      endUsersTotal withCredits low exhausted allocated used remaining unallocated
      needsAllocation
      topConsumers(first: 10) { used remaining endUser { externalId } }
      closeToRunningOut(first: 10) {
        remaining burnRatePerDay projectedExhaustionAt endUser { externalId }
      }
    }
    endUsers(first: 50) {
      totalCount pageInfo { hasNextPage endCursor }
      edges {
        node {
          externalId name
          balances {
            pool allocated used remaining expired status lowBalanceThreshold
            burnRatePerDay projectedExhaustionAt
          }
        }
      }
    }
    requestLog(first: 50) { edges { node { time endpoint status outcome latencyMs } } }
  }
}"""

# The nested read the PostGraphile comparison sends (bench.dashboard_peer): pools, the first
# 50 End Users with their balances, the 50 newest request-log entries.
NESTED = """
query Nested($id: ID!) {
  application(id: $id) {
    pools { key purchased allocated used remaining expired unallocated status }
    endUsers(first: 50) {
      totalCount
      edges {
        node {
          externalId name
          balances { pool allocated used remaining expired status lowBalanceThreshold }
        }
      }
    }
    requestLog(first: 50) { edges { node { time endpoint status outcome latencyMs } } }
  }
}"""

# The dashboard's parts, each alone under `application` (`bench.dashboard --parts`): what each
# costs the server. `name` alone is the cost of any request; the others add theirs to it.
DASHBOARD_PARTS = {
    "name": "",
    "pools": "pools { key purchased allocated used remaining expired unallocated status }",
    "pools + packs": "pools { key packs(first: 5) { credits expiresAt } }",
    "pools + series": "pools { key consumption(from: $from, to: $to, granularity: DAY) {"
    " totalUsed totalExpired buckets { start used expired purchased remaining spike } } }",
    "allocation summary": 'allocationSummary(pool: "ai") { endUsersTotal withCredits low'
    " exhausted allocated used remaining unallocated needsAllocation }",
    "summary + top consumers": 'allocationSummary(pool: "ai") { topConsumers(first: 10) {'
    " used remaining endUser { externalId } } }",
    "summary + close to running out": 'allocationSummary(pool: "ai") { closeToRunningOut('
    "first: 10) { remaining burnRatePerDay projectedExhaustionAt endUser { externalId } } }",
    "End Users": "endUsers(first: 50) { totalCount pageInfo { hasNextPage endCursor } edges {"
    " node { externalId name balances { pool allocated used remaining expired status"
    " lowBalanceThreshold burnRatePerDay projectedExhaustionAt } } } }",
    "End Users, no burn": "endUsers(first: 50) { totalCount pageInfo { hasNextPage endCursor }"
    " edges { node { externalId name balances { pool allocated used remaining expired status"
    " lowBalanceThreshold } } } }",
    "request log": "requestLog(first: 50) { edges { node { time endpoint status outcome"
    " latencyMs } } }",
}


def part_query(selection: str) -> str:
    """A document asking for the application's name and `selection`."""
    span = ", $from: DateTime!, $to: DateTime!" if "$from" in selection else ""
    return f"query Part($id: ID!{span}) {{ application(id: $id) {{ name {selection} }} }}"
