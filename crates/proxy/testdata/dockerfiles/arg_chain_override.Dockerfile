ARG R=reg.example
ARG IMG=$R/app
FROM $IMG:1
