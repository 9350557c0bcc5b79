// Tokens for the document when the service requires authentication: the signed-in
// Django user asks POST /api/tokens (session cookie + CSRF token) for write access,
// and for read access when writing is not allowed.

export class AccessError extends Error {
  constructor (status, message) {
    super(message)
    this.status = status
  }
}

export async function requestToken (config, perm) {
  let response
  try {
    response = await fetch(config.tokenUrl, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRFToken': config.csrfToken },
      body: JSON.stringify({ doc: config.docId, perm })
    })
  } catch (error) {
    throw new AccessError(0, 'the server cannot be reached')
  }
  let body = {}
  try {
    body = await response.json()
  } catch {
    // an HTML error page (a proxy's, a CSRF failure): keep the status
  }
  if (!response.ok) {
    throw new AccessError(response.status, body.message || `HTTP ${response.status}`)
  }
  return { token: body.token, perm: body.perm || perm, expiresIn: Number(body.expires_in) || 300 }
}

/** Write access if the account has it, else read access; AccessError otherwise. */
export async function obtainAccess (config) {
  try {
    return await requestToken(config, 'write')
  } catch (error) {
    if (error instanceof AccessError && error.status === 403) {
      return requestToken(config, 'read')
    }
    throw error
  }
}
