// GraphQL over HTTP (fetch) and over WebSocket (graphql-ws's client, graphql-transport-ws).

/** The credential was refused (revoked key, expired token): the page signs out. */
export class Unauthenticated extends Error {}

/** The server could not be reached, or answered with a server error. */
export class Unreachable extends Error {}

/** The answer carried GraphQL errors. */
export class QueryFailed extends Error {
  constructor(errors) {
    super(errors.map((error) => error.message).join("; "));
    this.errors = errors;
  }
}

const GRAPHQL_PATH = "/graphql";

export function createHttpClient(credential, onUnauthenticated) {
  return async function request(query, variables = {}) {
    let response;
    try {
      response = await fetch(GRAPHQL_PATH, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          Authorization: `Bearer ${credential}`,
        },
        body: JSON.stringify({ query, variables }),
      });
    } catch (error) {
      throw new Unreachable(`Network down: ${error.message}`);
    }
    if (response.status === 401) {
      const error = new Unauthenticated(await messageOf(response));
      onUnauthenticated(error);
      throw error;
    }
    if (response.status >= 500) {
      throw new Unreachable(`The server answered ${response.status}`);
    }
    const body = await response.json();
    if (body.errors && body.errors.length) {
      throw new QueryFailed(body.errors);
    }
    return body.data;
  };
}

async function messageOf(response) {
  try {
    const body = await response.json();
    return body.errors?.[0]?.message ?? "The credential was refused";
  } catch {
    return "The credential was refused";
  }
}

const CLOSE_FORBIDDEN = 4403;
const CLOSE_UNAUTHORIZED = 4401;

/**
 * A WebSocket client that reconnects for ever (with backoff) and resubscribes every active
 * subscription after a reconnection; `onState` hears "connecting", "live", "reconnecting" and
 * "refused", and `onReconnected` runs after a reconnection (to refetch what was missed).
 */
export function createLiveClient(credential, { onState, onReconnected, onUnauthenticated }) {
  const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${GRAPHQL_PATH}`;
  let everConnected = false;
  let refused = false;
  const client = window.graphqlWs.createClient({
    url: wsUrl,
    lazy: true,
    keepAlive: 10_000,
    retryAttempts: Infinity,
    connectionParams: () => ({ authorization: `Bearer ${credential}` }),
    shouldRetry: (event) => {
      const code = event?.code;
      if (code === CLOSE_FORBIDDEN || code === CLOSE_UNAUTHORIZED) {
        refused = true;
        onState("refused");
        onUnauthenticated(new Unauthenticated("The live connection refused the credential"));
        return false;
      }
      return true;
    },
    retryWait: async (retries) => {
      const wait = Math.min(500 * 2 ** retries, 8_000) + Math.random() * 300;
      await new Promise((resolve) => setTimeout(resolve, wait));
    },
    on: {
      connecting: () => onState(everConnected ? "reconnecting" : "connecting"),
      connected: () => {
        onState("live");
        if (everConnected) onReconnected();
        everConnected = true;
      },
      closed: (event) => {
        // 1000: closed on purpose (no subscription left, or signed out).
        if (!refused) onState(event?.code === 1000 ? "idle" : "reconnecting");
      },
    },
  });

  /** Subscribes; `onData` gets each event's data. Returns the unsubscribe function. */
  function subscribe(query, variables, onData, onError = () => {}) {
    return client.subscribe(
      { query, variables },
      {
        next: (result) => {
          if (result.errors?.length) onError(new QueryFailed(result.errors));
          else if (result.data) onData(result.data);
        },
        error: (error) => onError(error instanceof Error ? error : new Unreachable(String(error?.reason ?? error))),
        complete: () => {},
      },
    );
  }

  return { subscribe, dispose: () => client.dispose() };
}
