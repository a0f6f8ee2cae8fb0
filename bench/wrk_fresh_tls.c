/* Loaded into wrk (LD_PRELOAD) by the HTTPS section (bench/tls.py): every TLS connection wrk
 * opens does a full handshake.
 *
 * wrk keeps one SSL object per connection slot and, on reconnecting, calls SSL_clear, which
 * keeps the last session; its next SSL_connect offers that session and a server resumes it (a
 * PSK handshake under TLS 1.3: no certificate, no signature). A new client would offer none.
 * So before a handshake starts (SSL_in_before: nothing sent yet; wrk calls SSL_connect again
 * while a non-blocking handshake is under way) the session is dropped, then OpenSSL's own
 * SSL_connect runs. Built by bench/run.sh with `cc -shared -fPIC`; libssl is wrk's own. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_in_before(const SSL *s);
int SSL_set_session(SSL *s, SSL_SESSION *session);

int SSL_connect(SSL *s) {
    static int (*openssl_connect)(SSL *);
    if (openssl_connect == NULL)
        openssl_connect = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    if (SSL_in_before(s))
        SSL_set_session(s, NULL);
    return openssl_connect(s);
}
