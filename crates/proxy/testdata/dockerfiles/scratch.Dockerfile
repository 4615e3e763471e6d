FROM scratch
COPY f /f
