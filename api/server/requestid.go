package server

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/gin-gonic/gin"
)

const requestIDKey = "buildgw.request_id"

// requestIDMiddleware gives every request an ID, returned in X-Request-Id
// and carried by its log lines and audit records. A client's own ID is not
// trusted: it would let a caller forge audit correlations.
func requestIDMiddleware(c *gin.Context) {
	var b [12]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	c.Set(requestIDKey, id)
	c.Header("X-Request-Id", id)
	c.Next()
}

func requestID(c *gin.Context) string { return c.GetString(requestIDKey) }
