// buildgwBuild builds an image through a buildgw gateway and returns the
// pushed digest. The agent needs no Docker: the gateway builds in its own
// sandbox and pushes with its own credentials. See buildgwBuild.txt.

def call(Map args = [:]) {
    String server = (args.server ?: env.BUILDGW_URL ?: '').toString().replaceAll('/+$', '')
    if (!server) {
        error('buildgwBuild: no gateway: pass server: or set BUILDGW_URL')
    }
    List tags = asList(args.tags)
    if (!tags) {
        error('buildgwBuild: no destination: pass tags: ["registry.example.com/team/app:1"]')
    }
    if (!isUnix()) {
        error('buildgwBuild: Windows agents are not supported: run the step on a Linux or macOS agent (the build itself runs on the gateway)')
    }
    String credentialsId = args.credentialsId ?: 'buildgw-token'
    // CA certificates (PEM) of a gateway behind a private CA, trusted by
    // the download and by buildctl-lite beside the agent's own.
    String ca = (args.caFile ?: env.BUILDGW_CA_FILE ?: '').toString()

    List flags = ['--server', server]
    tags.each { flags += ['--tag', it.toString()] }
    if (args.dockerfile) {
        flags += ['--file', args.dockerfile.toString()]
    }
    def buildArgs = args.buildArgs ?: [:]
    if (buildArgs instanceof Map) {
        buildArgs.each { k, v -> flags += ['--build-arg', "${k}=${v}".toString()] }
    } else {
        asList(buildArgs).each { flags += ['--build-arg', it.toString()] }
    }
    if (args.target) {
        flags += ['--target', args.target.toString()]
    }
    if (args.runner) {
        flags += ['--runner', args.runner.toString()]
    }
    if (args.noCache) {
        flags << '--no-cache'
    }
    flags << (args.context ?: '.').toString()

    // The client: a given one, else the gateway's own, verified against
    // the checksum the gateway publishes. Exit 90-92 name a download
    // problem; anything else is buildctl-lite's.
    String cli = args.cli ?: env.BUILDCTL_LITE ?: ''
    String fetch = cli ? "cli=${q(cli)}" : '''\
# fetch URL FILE: an error answer of the gateway is printed whole.
fetch() {
  if command -v curl >/dev/null 2>&1; then
    code=$(curl -sSL ${ca:+--cacert "$ca"} -o "$2" -w '%{http_code}' "$1") || return 1
    [ "$code" = 200 ] && return 0
    echo "buildgwBuild: GET $1: HTTP $code: $(cat "$2")" >&2
  elif wget --help 2>&1 | grep -- --content-on-error >/dev/null; then
    wget -q ${ca:+--ca-certificate="$ca"} --content-on-error -O "$2" "$1" && return 0
    echo "buildgwBuild: GET $1 failed: $(cat "$2" 2>/dev/null)" >&2
  else
    # BusyBox wget: no error body; its TLS helper reads SSL_CERT_FILE.
    if [ -n "$ca" ]; then SSL_CERT_FILE=$ca wget -q -O "$2" "$1" && return 0; else wget -q -O "$2" "$1" && return 0; fi
    echo "buildgwBuild: GET $1 failed" >&2
  fi
  return 1
}
command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1 || exit 92
os=$(uname -s | tr '[:upper:]' '[:lower:]')
case $(uname -m) in x86_64|amd64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
file=buildctl-lite-$os-$arch
fetch "$server/dl/buildctl-lite/$os/$arch" "$dir/$file" || exit 90
fetch "$server/dl/buildctl-lite/$os/$arch.sha256" "$dir/$file.sha256" || exit 90
(cd "$dir" && sha256sum -c "$file.sha256" >&2) || exit 91
chmod +x "$dir/$file"
cli=$dir/$file'''

    // Everything the step writes (the client, its output) goes to a
    // directory outside the workspace, so none of it enters the build
    // context, and it is removed at the end.
    String dir = sh(returnStdout: true, script: 'mktemp -d').trim()
    try {
        int code
        // A Jenkins secret text, or an oidc-provider ID token credential:
        // both bind as a string.
        withCredentials([string(credentialsId: credentialsId, variable: 'BUILDGW_TOKEN')]) {
            // The status is returned, not thrown, so that each failure
            // gets its own message. The digest goes to a file; the build
            // log (stderr) to the console, and to a file for the error.
            code = sh(returnStatus: true, script: """\
#!/bin/sh
set -u
dir=${q(dir)}
server=${q(server)}
ca=${q(ca)}
${fetch}
{ BUILDGW_CA_FILE=\$ca "\$cli" submit ${flags.collect { q(it) }.join(' ')} 2>&1 >"\$dir/out"; echo \$? >"\$dir/status"; } | tee "\$dir/log" >&2
exit "\$(cat "\$dir/status")"
""")
        }
        switch (code) {
            case 0:
                break
            case 90:
                error("buildgwBuild: could not download buildctl-lite from ${server}; the gateway's answer is above")
            case 91:
                error("buildgwBuild: the buildctl-lite downloaded from ${server} does not match its published sha256")
            case 92:
                error('buildgwBuild: the agent has neither curl nor wget to download buildctl-lite (or pass cli:)')
            default:
                // buildctl-lite's own one-line error names the cause: a
                // refusal (unauthorized, denied by a policy rule) or the
                // failed build.
                String why = sh(returnStdout: true, script: "sed -n 's/^Error: //p' ${q(dir)}/log | tail -n 1").trim()
                if (why.startsWith('build ')) {
                    error("buildgwBuild: the build of ${tags.join(', ')} failed: ${why}; see its log above")
                }
                error("buildgwBuild: ${tags.join(', ')}: ${why ?: "buildctl-lite exit ${code}"}")
        }
        String digest = sh(returnStdout: true, script: "tail -n 1 ${q(dir)}/out").trim()
        if (!(digest ==~ /sha256:[0-9a-f]{64}/)) {
            error("buildgwBuild: no digest in buildctl-lite's output: ${digest}")
        }
        return digest
    } finally {
        sh(script: "rm -rf ${q(dir)}")
    }
}

private static List asList(def v) {
    if (v == null) {
        return []
    }
    if (v instanceof Collection) {
        return v as List
    }
    return [v]
}

// q quotes s for sh.
private static String q(def s) {
    return "'" + s.toString().replace("'", "'\\''") + "'"
}
